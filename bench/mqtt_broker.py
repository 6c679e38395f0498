"""The broker's limit: IoT Agent for JSON measures published with QoS 1 by one process and
counted by a plain subscriber (QoS 1) in another, through the local Mosquitto.

    .venv/bin/python bench/mqtt_broker.py [--seconds 10] [--host 127.0.0.1] [--port 1883]

The publisher keeps --window messages in flight (each waits for its PUBACK) on
``/json/<apikey>/sensor-<n>/attrs`` for --devices devices; the subscriber counts what reaches
it. The figure is the subscriber's messages per second, first to last message: the most an MQTT
consumer on this broker could be handed. The end-to-end figure through Cidade (the bridge, the
agent, the store) goes next to it (bench/devices.py).

Both ends are gmqtt, the fastest Python MQTT client measured (bench/mqtt_clients.py): with
paho-mqtt at both ends the figure was the clients' own limit (a publisher at about a quarter of
the rate gmqtt reaches), not the broker's.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Callable

import gmqtt
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.storage import PersistentStorage


def payload(i: int) -> bytes:
    return b'{"t": %d.5, "h": %d, "no2": %d.25}' % (15 + i % 20, 40 + i % 50, i % 90)


class _Inflight(PersistentStorage):
    """gmqtt's store of unacknowledged QoS 1 publishes, telling who waits for which PUBACK.
    The bridge's _Outbox does the same for commands; the load generator keeps its own, so that
    what drives the benchmark never changes with the code it measures."""

    def __init__(self) -> None:
        super().__init__()
        self.last_mid = 0
        self.waiting: dict[int, asyncio.Future[None]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        waiter = self.waiting.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Publisher:
    """One device-like MQTT 3.1.1 connection publishing with QoS 1 and waiting for PUBACKs."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.inflight = _Inflight()
        self.client = gmqtt.Client(
            f"bench-pub-{uuid.uuid4().hex[:8]}", persistent_storage=self.inflight
        )

    async def __aenter__(self) -> Publisher:
        await self.client.connect(self.host, self.port, version=MQTTv311)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.client.disconnect()

    async def publish(self, topic: str, body: bytes) -> None:
        acked = asyncio.get_running_loop().create_future()
        self.client.publish(topic, body, qos=1)
        self.inflight.waiting[self.inflight.last_mid] = acked
        await acked


async def publish(
    host: str,
    port: int,
    apikey: str,
    seconds: float,
    devices: int,
    window: int,
    first: int = 0,
    body: Callable[[int], bytes] = payload,
) -> tuple[int, float, dict[int, int], float]:
    """Publish for ``seconds`` with ``window`` messages awaiting their PUBACK, message ``i``
    (from ``first``) by device ``i % devices``; then the end marker with the count.
    (sent, seconds, {device: its last i}, start as perf_counter)"""
    sent = 0
    last: dict[int, int] = {}
    async with Publisher(host, port) as publisher:
        start = time.perf_counter()
        deadline = start + seconds

        async def lane(k: int) -> None:
            nonlocal sent
            i = first + k
            while time.perf_counter() < deadline:
                device = i % devices
                await publisher.publish(f"/json/{apikey}/sensor-{device}/attrs", body(i))
                last[device] = max(last.get(device, -1), i)
                sent += 1
                i += window

        await asyncio.gather(*(lane(k) for k in range(window)))
        elapsed = time.perf_counter() - start
        await publisher.publish(f"/bench/{apikey}/end", str(sent).encode())
    return sent, elapsed, last, start


async def subscribe(host: str, port: int, apikey: str, ready, result) -> None:
    """Count until the publisher's end marker said how many were sent and all arrived, or
    nothing came for 5 s after it (a broker past its max_queued_messages drops QoS 1 messages
    for a subscriber that lags behind). MQTT 5, as Cidade's bridge."""
    count = 0
    first = last = 0.0
    expected: int | None = None
    done = asyncio.Event()
    arrived = asyncio.Event()
    subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_message(_client, topic: str, body: bytes, _qos: int, _properties) -> int:
        nonlocal count, first, last, expected
        if topic.endswith("/end"):
            expected = int(body)
        else:
            last = time.perf_counter()
            if count == 0:
                first = last
            count += 1
        if expected is not None:
            arrived.set()
            if count >= expected:
                done.set()
        return 0

    def on_subscribe(*_args) -> None:
        if not subscribed.done():
            subscribed.set_result(None)

    client = gmqtt.Client(f"bench-sub-{uuid.uuid4().hex[:8]}")
    client.on_message = on_message
    client.on_subscribe = on_subscribe
    await client.connect(host, port, version=MQTTv50)
    client.subscribe(
        [
            gmqtt.Subscription(f"/json/{apikey}/+/attrs", qos=1),
            gmqtt.Subscription(f"/bench/{apikey}/end", qos=1),
        ]
    )
    await subscribed
    ready.set()
    while not done.is_set():
        seen = count
        try:
            await asyncio.wait_for(done.wait(), 5)
        except TimeoutError:
            if arrived.is_set() and count == seen:
                break  # the end marker came and nothing more for 5 s: the rest was dropped
    await client.disconnect()
    result.put((count, last - first))


def subscriber(host: str, port: int, apikey: str, ready, result) -> None:
    asyncio.run(subscribe(host, port, apikey, ready, result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--window", type=int, default=64, help="publishes awaiting PUBACK")
    args = parser.parse_args()

    apikey = f"bench{uuid.uuid4().hex[:8]}"
    ctx = multiprocessing.get_context("spawn")
    ready, result = ctx.Event(), ctx.Queue()
    process = ctx.Process(
        target=subscriber, args=(args.host, args.port, apikey, ready, result), daemon=True
    )
    process.start()
    if not ready.wait(15):
        raise SystemExit(f"no subscriber: is there a broker at {args.host}:{args.port}?")
    sent, elapsed, _, _ = asyncio.run(
        publish(args.host, args.port, apikey, args.seconds, args.devices, args.window)
    )
    received, span = result.get(timeout=120)
    process.join(10)
    print(
        f"MQTT broker {args.host}:{args.port}, QoS 1, {args.devices} devices, "
        f"window {args.window}: published {sent} in {elapsed:.1f} s ({sent / elapsed:,.0f}/s)"
    )
    lost = f", {sent - received} dropped by the broker" if received < sent else ""
    print(f"received {received} ({received / span if span else 0:,.0f} messages/s){lost}")


if __name__ == "__main__":
    main()
