"""The MQTT bridge in its own process (devices/mqtt_process.py): started again when it dies,
gone when the server is, told when groups change; the channel between the two."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from cidade.devices.mqtt import MqttUnavailable
from cidade.devices.mqtt_process import ChannelClosed, _Channel
from tests.conftest import NGSI, admin_client, make_settings
from tests.devices.test_mqtt_app import (
    COUNTER,
    TENANT,
    app_for,
    broker,  # noqa: F401 (a fixture)
    entity,
    provision,
    publish,
    wait_for,
)


def intensity(client) -> int | None:
    e = entity(client, COUNTER)
    return e["intensity"]["value"] if e and "intensity" in e else None


def test_a_bridge_process_that_dies_is_started_again_and_nothing_is_lost(tmp_path, broker):  # noqa: F811
    with admin_client(app_for(tmp_path, broker, "cidade-p1")) as client:
        provision(client)
        bridge = client.app.state.bridge
        wait_for(lambda: bridge.connected)
        publish(broker, [("/json/traffic/tc1/attrs", {"f": 1})])
        wait_for(lambda: intensity(client) == 1)
        wait_for(lambda: bridge.counters.measures == 1)  # reported (a killed process says no more)
        first = bridge.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not bridge.connected)
        # Published while no bridge runs: the session keeps them for the next one.
        publish(broker, [("/json/traffic/tc1/attrs", {"f": n}) for n in range(2, 22)])
        wait_for(lambda: bridge.connected and bridge.pid != first, timeout=15)
        assert bridge.starts == 2
        wait_for(lambda: intensity(client) == 21, timeout=15)
        r = client.get(
            f"{NGSI}/temporal/entities/{COUNTER}",
            headers={"NGSILD-Tenant": "city"},
            params={"attrs": "intensity", "options": "temporalValues", "lastN": "100"},
        )
        assert sorted(v[0] for v in r.json()["intensity"]["values"]) == list(range(1, 22))
        # The counters add up over both processes, and the server's agent counts what the
        # process's agent did.
        wait_for(lambda: bridge.counters.measures == 21)
        assert client.app.state.agent.counts["written"] == 21


def test_the_bridge_process_stops_with_the_server(tmp_path, broker):  # noqa: F811
    with admin_client(app_for(tmp_path, broker, "cidade-p2")) as client:
        bridge = client.app.state.bridge
        wait_for(lambda: bridge.connected)
        pid = bridge.pid
    # Stopped cleanly with the app: the process is gone, and was waited for.
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_change_of_group_reaches_the_bridge_process_at_once(tmp_path, broker):  # noqa: F811
    with admin_client(app_for(tmp_path, broker, "cidade-p3")) as client:
        provision(client)
        bridge = client.app.state.bridge
        wait_for(lambda: bridge.connected)
        publish(broker, [("/json/traffic/tc1/attrs", {"f": 5, "o": 7})])
        wait_for(lambda: intensity(client) == 5)
        assert "occupancy" not in entity(client, COUNTER)
        # "o" gets a name; the profile the bridge process holds (kept 10 s) is forgotten.
        r = client.put(
            "/iot/services",
            params={"apikey": "traffic", "resource": "/iot/json"},
            json={
                "attributes": [
                    {"object_id": "f", "name": "intensity", "type": "Integer"},
                    {"object_id": "o", "name": "occupancy", "type": "Number"},
                ]
            },
            headers=TENANT,
        )
        assert r.status_code == 204, r.text
        publish(broker, [("/json/traffic/tc1/attrs", {"f": 6, "o": 0.5})])
        got = wait_for(
            lambda: (e := entity(client, COUNTER)) and e["intensity"]["value"] == 6 and e
        )
        assert got["occupancy"]["value"] == 0.5


def test_commands_are_refused_while_the_bridge_process_is_not_connected(tmp_path):
    settings = make_settings(
        store=f"sqlite:///{tmp_path}/m.db", mqtt="mqtt://127.0.0.1:9", mqtt_client_id="nobody"
    )
    from cidade.app import build_app

    with admin_client(build_app(settings)) as client:
        bridge = client.app.state.bridge
        with pytest.raises(MqttUnavailable):
            client.portal.call(bridge.send_command, "k", "d", b"{}")


def test_a_bridge_process_whose_server_is_gone_exits_and_signals_do_not_stop_it(tmp_path):
    ours, theirs = socket.socketpair()
    env = {
        **os.environ,
        "CIDADE_MQTT": "mqtt://127.0.0.1:9",  # nothing listens: it keeps trying
        "CIDADE_STORE": f"sqlite:///{tmp_path}/x.db",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "cidade.devices.mqtt_process", str(theirs.fileno())],
        pass_fds=(theirs.fileno(),),
        env=env,
        stderr=subprocess.PIPE,
    )
    theirs.close()
    try:
        time.sleep(1.0)
        # Ctrl-C or a stop of the whole process group: the server decides when it stops.
        child.send_signal(signal.SIGINT)
        child.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert child.poll() is None  # alive while its server is
        ours.close()
        assert child.wait(15) == 0
        said = child.stderr.read()
        assert b"the server is gone" in said
        assert b"Traceback" not in said
    finally:
        if child.poll() is None:
            child.kill()


def test_the_channel_calls_both_ways_and_fails_calls_when_closed():
    async def scenario() -> None:
        a, b = socket.socketpair()
        ra, wa = await asyncio.open_connection(sock=a)
        rb, wb = await asyncio.open_connection(sock=b)
        told: list[str] = []

        async def double(x: int) -> int:
            return 2 * x

        async def broken() -> None:
            raise MqttUnavailable("no broker")

        async def never() -> None:
            await asyncio.Event().wait()

        left = _Channel(ra, wa, {"told": told.append})
        right = _Channel(rb, wb, {"double": double, "broken": broken, "never": never})
        serving = [asyncio.create_task(c.serve()) for c in (left, right)]
        assert await left.call("double", 21) == 42
        with pytest.raises(MqttUnavailable, match="no broker"):
            await left.call("broken")
        right.tell("told", "hello")
        for _ in range(100):
            if told:
                break
            await asyncio.sleep(0.01)
        assert told == ["hello"]
        pending = asyncio.create_task(left.call("never"))
        await asyncio.sleep(0.05)
        right.close()
        with pytest.raises(ChannelClosed):
            await asyncio.wait_for(pending, 5)
        with pytest.raises(ChannelClosed):
            await left.call("double", 1)
        await asyncio.gather(*serving)

    asyncio.run(scenario())
