"""The broker's own rate: IoT Agent for JSON measures published with QoS 1 by one process and
counted by a plain aiomqtt subscriber (QoS 1) in another, through the local Mosquitto.

    .venv/bin/python bench/mqtt_broker.py [--seconds 10] [--host 127.0.0.1] [--port 1883]

The publisher keeps --window messages in flight (each waits for its PUBACK) on
``/json/<apikey>/sensor-<n>/attrs`` for --devices devices; the subscriber counts what reaches
it. The figure is the subscriber's messages per second, first to last message: the most an MQTT
bridge on this broker could ever be handed. The end-to-end figure through Cidade (the bridge,
the agent, the store) goes next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
import uuid

import aiomqtt


def payload(i: int) -> bytes:
    return b'{"t": %d.5, "h": %d, "no2": %d.25}' % (15 + i % 20, 40 + i % 50, i % 90)


async def subscribe(host: str, port: int, apikey: str, ready, result) -> None:
    """Count until the publisher's end marker said how many were sent and all arrived, or
    nothing came for 5 s after it (a broker past its max_queued_messages drops QoS 1 messages
    for a subscriber that lags behind)."""
    count = 0
    first = last = 0.0
    loop = asyncio.get_running_loop()
    async with aiomqtt.Client(host, port, identifier=f"bench-sub-{uuid.uuid4().hex[:8]}") as c:
        await c.subscribe(f"/json/{apikey}/+/attrs", qos=1)
        await c.subscribe(f"/bench/{apikey}/end", qos=1)
        ready.set()
        expected = None
        try:
            async with asyncio.timeout(None) as quiet:
                async for message in c.messages:
                    if message.topic.value.endswith("/end"):
                        expected = int(message.payload)
                    else:
                        last = time.perf_counter()
                        if count == 0:
                            first = last
                        count += 1
                    if expected is not None:
                        if count >= expected:
                            break
                        quiet.reschedule(loop.time() + 5)
        except TimeoutError:
            pass
    result.put((count, last - first))


def subscriber(host: str, port: int, apikey: str, ready, result) -> None:
    asyncio.run(subscribe(host, port, apikey, ready, result))


async def publish(host: str, port: int, apikey: str, seconds: float, devices: int, window: int):
    sent = 0
    async with aiomqtt.Client(
        host, port, identifier=f"bench-pub-{uuid.uuid4().hex[:8]}", max_inflight_messages=window
    ) as c:
        c.pending_calls_threshold = window + 1  # aiomqtt warns past it; the window is on purpose
        start = time.perf_counter()
        deadline = start + seconds

        async def lane(k: int) -> None:
            nonlocal sent
            i = k
            while time.perf_counter() < deadline:
                topic = f"/json/{apikey}/sensor-{i % devices}/attrs"
                await c.publish(topic, payload(i), qos=1)
                sent += 1
                i += window

        await asyncio.gather(*(lane(k) for k in range(window)))
        elapsed = time.perf_counter() - start
        await c.publish(f"/bench/{apikey}/end", str(sent).encode(), qos=1)
    return sent, elapsed


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
    sent, elapsed = asyncio.run(
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
