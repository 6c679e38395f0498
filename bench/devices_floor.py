"""The floor under bench/devices.py: the least a Python consumer that stores these messages does.

    .venv/bin/python bench/devices_floor.py [--seconds 20] [--devices 1000] [--window 64]

The same private Mosquitto, publisher and messages as bench/devices.py, consumed by a process
that does only what no consumer storing them can skip: gmqtt receiving them (MQTT 5, QoS 1,
acknowledged on receipt), one JSON parse each, and per batch of up to 8,000 one SQLite
transaction (WAL, synchronous NORMAL, in a thread) that upserts each device's entity as one
JSON document and appends one history row per measure. No NGSI-LD, no profiles, no checks, no
instance ids, no indexes. The figure is messages divided by the time from the first publish
until the consumer committed the last one: how far Cidade's own work is from the bare minimum
on the same machine, in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

import gmqtt
import orjson
from gmqtt.mqtt.constants import MQTTv50

from devices import payload, start_broker
from mqtt_broker import publish

BATCH = 8000


def _write(db: sqlite3.Connection, batch: list[tuple[str, bytes]]) -> int:
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    entities: dict[str, str] = {}
    history: list[tuple[str, str, str, object]] = []
    for topic, body in batch:
        measures = orjson.loads(body)
        entity = "urn:ngsi-ld:AirQualityObserved:" + topic.split("/")[3]
        doc = {"id": entity, "type": "AirQualityObserved"}
        for name, value in measures.items():
            doc[name] = {"type": "Property", "value": value, "observedAt": now}
            history.append((entity, name, now, value))
        entities[entity] = orjson.dumps(doc).decode()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO entities VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
        list(entities.items()),
    )
    db.executemany("INSERT INTO history VALUES (?, ?, ?, ?)", history)
    db.execute("COMMIT")
    return len(batch)


async def _consume(port: int, database: str, control, done) -> None:
    db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE entities (id TEXT PRIMARY KEY, doc TEXT)")
    db.execute("CREATE TABLE history (entity TEXT, attr TEXT, at TEXT, value)")
    inbox: list[tuple[str, bytes]] = []
    arrived = asyncio.Event()

    def on_message(_client, topic: str, body: bytes, _qos: int, _properties) -> int:
        inbox.append((topic, body))
        arrived.set()
        return 0

    client = gmqtt.Client("bench-floor", receive_maximum=2 * BATCH)
    client.on_message = on_message
    await client.connect("127.0.0.1", port, version=MQTTv50)
    client.subscribe("/json/+/+/attrs", qos=1)
    await asyncio.sleep(0.5)
    control.put("ready")
    loop = asyncio.get_running_loop()
    written, expected = 0, None
    while expected is None or written < expected:
        if inbox:
            batch, inbox[:] = inbox[:BATCH], inbox[BATCH:]
            written += await loop.run_in_executor(None, _write, db, batch)
        else:
            arrived.clear()
            try:
                await asyncio.wait_for(arrived.wait(), 0.05)
            except TimeoutError:
                pass
        if expected is None and not control.empty():
            expected = control.get()
    done.put(time.perf_counter())
    await client.disconnect()


def consumer(port: int, database: str, control, done) -> None:
    gc.freeze()
    gc.set_threshold(200_000)  # as Cidade serves
    asyncio.run(_consume(port, database, control, done))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--window", type=int, default=64, help="publishes awaiting PUBACK")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cidade-devices-floor-"))
    broker, port = start_broker(folder)
    try:
        ctx = multiprocessing.get_context("spawn")
        control, done = ctx.Queue(), ctx.Queue()
        process = ctx.Process(
            target=consumer, args=(port, str(folder / "floor.db"), control, done), daemon=True
        )
        process.start()
        if control.get(timeout=30) != "ready":
            raise SystemExit("the consumer did not start")
        sent, elapsed, _, start = asyncio.run(
            publish(
                "127.0.0.1", port, "floor", args.seconds, args.devices, args.window, body=payload
            )
        )
        control.put(sent)
        finished = done.get(timeout=1800)
        process.join(10)
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"floor consumer (gmqtt, JSON parse, SQLite upsert + history row per measure): "
        f"{sent / (finished - start):,.0f} messages/s, {sent:,} messages "
        f"(published at {sent / elapsed:,.0f}/s)"
    )


if __name__ == "__main__":
    main()
