"""What reading a message costs each MQTT client library, MQTT 5, QoS 1, acknowledged.

    .venv/bin/python bench/mqtt_clients.py [--seconds 3]

For each client (paho-mqtt through aiomqtt, with MQTT 5 and with MQTT 3.1.1; gmqtt acknowledging
after its handler returns, as the device bridge does), one private Mosquitto: the client
subscribes with a persistent session and leaves, a publisher queues --seconds worth of device
measures for it, then the client comes back and drains them. The figures are the drain's rate
and the CPU this process spent per message (the broker is another process). Why the device
bridge (src/cidade/devices/mqtt.py) is built on gmqtt.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import tempfile
import time
from pathlib import Path

import aiomqtt
import gmqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from devices import publish, start_broker


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def paho(port: int, v5: bool, name: str, total: int | None) -> str | None:
    if v5:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        props.ReceiveMaximum = 1000
        kw: dict = {
            "protocol": aiomqtt.ProtocolVersion.V5,
            "clean_start": False,
            "properties": props,
        }
    else:
        kw = {"clean_session": False}
    async with aiomqtt.Client("127.0.0.1", port, identifier=name, **kw) as c:
        if total is None:
            await c.subscribe("/json/+/+/attrs", qos=1)
            return None
        n, t0, c0 = 0, time.perf_counter(), cpu()
        async for _ in c.messages:
            n += 1
            if n >= total:
                break
        return f"{n / (time.perf_counter() - t0):,.0f}/s, {1e6 * (cpu() - c0) / n:.1f} µs a message"


async def gmqtt_client(port: int, name: str, total: int | None) -> str | None:
    done, seen = asyncio.Event(), [0]
    c = gmqtt.Client(
        name,
        clean_session=False,
        optimistic_acknowledgement=False,
        session_expiry_interval=3600,
        receive_maximum=1000,
    )

    async def on_message(client, topic, payload, qos, properties) -> int:
        seen[0] += 1
        if total is not None and seen[0] >= total:
            done.set()
        return 0

    c.on_message = on_message
    t0, c0 = time.perf_counter(), cpu()
    await c.connect("127.0.0.1", port, version=gmqtt.constants.MQTTv50)
    if total is None:
        c.subscribe("/json/+/+/attrs", qos=1)
        await asyncio.sleep(0.5)
        await c.disconnect()
        return None
    await done.wait()
    rate = seen[0] / (time.perf_counter() - t0)
    result = f"{rate:,.0f}/s, {1e6 * (cpu() - c0) / seen[0]:.1f} µs a message"
    await c.disconnect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cidade-mqtt-clients-"))
    broker, port = start_broker(folder)
    clients = {
        "paho-mqtt (aiomqtt), MQTT 5": lambda total: paho(port, True, "paho5", total),
        "paho-mqtt (aiomqtt), MQTT 3.1.1": lambda total: paho(port, False, "paho3", total),
        "gmqtt, MQTT 5, PUBACK after the handler": lambda total: gmqtt_client(port, "g5", total),
    }
    try:
        for label, run in clients.items():
            asyncio.run(run(None))  # the persistent session, subscribed
            sent, *_ = asyncio.run(publish(port, "bench", args.seconds, 1000, 64))
            print(f"{label}: {asyncio.run(run(sent))} ({sent:,} messages)")
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
