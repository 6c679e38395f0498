"""The SQLite store's writes of device updates in one process, with nothing beside them.

    .venv/bin/python bench/device_writes.py [--batches 50] [--devices 1000]

What bench/devices.py's messages become once mapped: per batch, eight updates of each of
--devices AirQualityObserved entities (three Properties with observedAt, in the stored form the
agent gives the store), written as the agent writes them: one store write per batch, each update
its own change (its own history instances), history on. The figure is messages (updates) per
second and the process's CPU per message: the store's part of Cidade's device path, measured
without the MQTT bridge and the mapping competing with it for the interpreter lock, to set
next to bench/devices.py's end-to-end figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import shutil
import tempfile
import time
from pathlib import Path

from cidade.devices.agent import upsert
from cidade.ngsild import timefmt
from cidade.store.sqlite import SqliteStore

MODEL = "https://smartdatamodels.org/dataModel.Environment/"
PER_DEVICE = 8  # messages of each device in a batch (8,000 messages, as the bridge's)


def update(device: int, seq: int, now: str) -> dict:
    """One device message's update, as Agent.stored makes it."""

    def measure(value: float) -> list[dict]:
        return [
            {
                "type": "Property",
                "value": value,
                "observedAt": now,
                "createdAt": now,
                "modifiedAt": now,
            }
        ]

    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:sensor-{device}",
        "type": [MODEL + "AirQualityObserved"],
        "createdAt": now,
        "modifiedAt": now,
        "attrs": {
            MODEL + "seq": measure(seq),
            MODEL + "no2": measure(seq % 90 + 0.25),
            "https://smartdatamodels.org/temperature": measure(15.5 + seq % 20),
        },
    }


async def run(folder: Path, batches: int, devices: int) -> tuple[int, float, float]:
    store = SqliteStore(str(folder / "store.db"))
    await store.open()
    try:
        gc.freeze()
        gc.set_threshold(200_000)  # as Cidade serves
        now = timefmt.now()
        await store.write("bench", [upsert(update(d, 0, now)) for d in range(devices)])
        seq = messages = 0
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(batches):
            now = timefmt.now()
            ops = []
            for _ in range(PER_DEVICE):
                ops.extend(upsert(update(d, seq + d, now)) for d in range(devices))
                seq += devices
            await store.write("bench", ops)
            messages += len(ops)
        return messages, time.perf_counter() - start, time.process_time() - cpu
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cidade-device-writes-"))
    try:
        messages, seconds, cpu = asyncio.run(run(folder, args.batches, args.devices))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(
        f"SQLite store, device updates with history: {messages / seconds:,.0f} messages/s, "
        f"{cpu / messages * 1e6:.0f} µs of CPU each ({messages:,} messages)"
    )


if __name__ == "__main__":
    main()
