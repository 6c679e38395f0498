"""The whole platform with a real broker: devices publish as to the FIWARE IoT Agent for JSON,
entities change; operators send commands, devices answer; nothing published while Cidade was
down is lost."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiomqtt
import orjson
import pytest

from cidade.app import build_app
from tests.conftest import NGSI, admin_client, make_settings, service_missing
from tests.devices.test_mqtt import MOSQUITTO, Broker

TENANT = {"Fiware-Service": "city", "NGSILD-Tenant": "city"}
COUNTER = "urn:ngsi-ld:TrafficFlowObserved:tc1"
BOLLARD = "urn:ngsi-ld:Device:b1"


@pytest.fixture
def broker(tmp_path):
    if MOSQUITTO is None:
        service_missing("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def app_for(tmp_path, broker, client_id: str) -> Any:
    settings = make_settings(
        store=f"sqlite:///{tmp_path}/m.db",
        mqtt=broker.url,
        mqtt_client_id=client_id,
        command_timeout=30,
    )
    return build_app(settings)


def publish(broker: Broker, messages: list[tuple[str, Any]]) -> None:
    async def run() -> None:
        async with aiomqtt.Client(
            "127.0.0.1", broker.port, identifier=f"dev-{uuid.uuid4().hex}"
        ) as c:
            for topic, body in messages:
                payload = body if isinstance(body, bytes) else orjson.dumps(body)
                await c.publish(topic, payload, qos=1)

    asyncio.run(run())


def wait_for(check, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def provision(client: Any) -> None:
    groups = [
        {
            "apikey": "traffic",
            "entity_type": "TrafficFlowObserved",
            "attributes": [
                {"object_id": "f", "name": "intensity", "type": "Integer"},
                {
                    "object_id": "s",
                    "name": "averageVehicleSpeed",
                    "type": "Number",
                    "metadata": {"unitCode": {"type": "Text", "value": "KMH"}},
                },
            ],
        },
        {
            "apikey": "bollards",
            "entity_type": "Device",
            "autoprovision": False,
            "commands": [
                {"name": "raise", "type": "command"},
                {"name": "lower", "type": "command"},
            ],
        },
    ]
    assert (
        client.post("/iot/services", json={"services": groups}, headers=TENANT).status_code == 201
    )
    r = client.post(
        "/iot/devices",
        json={"devices": [{"device_id": "b1", "apikey": "bollards", "entity_type": "Device"}]},
        headers=TENANT,
    )
    assert r.status_code == 201, r.text


def entity(client: Any, eid: str) -> dict[str, Any] | None:
    r = client.get(f"{NGSI}/entities/{eid}", headers={"NGSILD-Tenant": "city"})
    return r.json() if r.status_code == 200 else None


def test_measures_and_commands_through_the_broker(tmp_path, broker):
    with admin_client(app_for(tmp_path, broker, "cidade-a")) as client:
        provision(client)
        assert wait_for(lambda: client.app.state.bridge.connected)
        publish(
            broker,
            [
                (
                    "/json/traffic/tc1/attrs",
                    {"f": 12, "s": 31.5, "TimeInstant": "2026-11-26T08:30:00Z"},
                ),
                ("/traffic/tc1/attrs/f", b"14"),
                (
                    "/json/traffic/tc1/attrs",
                    {"f": "many"},
                ),  # refused whole: intensity is an Integer
                ("/json/nobody/x/attrs", {"f": 1}),  # unknown apikey
            ],
        )
        got = wait_for(
            lambda: (e := entity(client, COUNTER)) and e["intensity"]["value"] == 14 and e
        )
        assert got["averageVehicleSpeed"]["unitCode"] == "KMH"
        counts = client.app.state.agent.counts
        wait_for(lambda: counts["refused_invalid"] == 1 and counts["refused_unknown_apikey"] == 1)
        assert entity(client, COUNTER)["intensity"]["value"] == 14

        # A command: the operator's update goes to /bollards/b1/cmd; the device answers.
        received: list[bytes] = []

        async def device() -> None:
            async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bollard-b1") as c:
                await c.subscribe("/bollards/b1/cmd", qos=1)
                ready.set()
                async for message in c.messages:
                    received.append(message.payload)
                    await c.publish("/json/bollards/b1/cmdexe", b'{"lower": "lowered"}', qos=1)
                    return

        async def scenario() -> None:
            task = asyncio.create_task(device())
            await ready.wait()
            r = await asyncio.to_thread(
                client.patch,
                f"{NGSI}/entities/{BOLLARD}/attrs",
                json={"lower": {"type": "Property", "value": "now"}},
                headers={"NGSILD-Tenant": "city"},
            )
            assert r.status_code == 204, r.text
            await asyncio.wait_for(task, 10)

        # The bollard's entity exists once it has said something.
        publish(broker, [("/json/bollards/b1/attrs", {"deviceState": "raised"})])
        wait_for(lambda: entity(client, BOLLARD))
        ready = asyncio.Event()
        asyncio.run(scenario())
        assert received == [b'{"lower":"now"}']
        got = wait_for(
            lambda: (e := entity(client, BOLLARD)) and e["lower_status"]["value"] == "OK" and e
        )
        assert got["lower_info"]["value"] == "lowered"


def test_messages_published_while_cidade_was_down_arrive_after(tmp_path, broker):
    with admin_client(app_for(tmp_path, broker, "cidade-b")) as client:
        provision(client)
        wait_for(lambda: client.app.state.bridge.connected)
    # Cidade is down: its persistent session keeps what devices publish meanwhile.
    publish(broker, [("/json/traffic/tc1/attrs", {"f": n}) for n in range(1, 51)])
    with admin_client(app_for(tmp_path, broker, "cidade-b")) as client:
        history = wait_for(
            lambda: (
                (
                    r := client.get(
                        f"{NGSI}/temporal/entities/{COUNTER}",
                        headers={"NGSILD-Tenant": "city"},
                        params={"attrs": "intensity", "options": "temporalValues", "lastN": "100"},
                    )
                ).status_code
                == 200
                and len(r.json()["intensity"]["values"]) == 50
                and r.json()
            )
        )
        assert sorted(v[0] for v in history["intensity"]["values"]) == list(range(1, 51))
