"""Device messages through Cidade: from MQTT publish to entity updated, next to the broker's limit.

    .venv/bin/python bench/devices.py [--seconds 60] [--devices 1000] [--window 64] [--drain 10]
                                [--store sqlite|postgres]

One run, one private Mosquitto (persistence on, ``max_queued_messages 0`` as docs/devices.md
asks of a production broker), the same publisher and the same messages in every phase: IoT
Agent for JSON measures (``/json/<apikey>/sensor-<n>/attrs``, QoS 1, --window publishes
awaiting their PUBACK) from bench/mqtt_broker.py's gmqtt publisher, which reaches several times
the rate of a paho-mqtt one, so the broker rather than the publisher sets the first figure.

1. the broker alone: the publisher for --seconds, counted by a plain gmqtt subscriber in
   another process (bench/mqtt_broker.py's): the most any MQTT consumer on this broker is
   handed;
2. through Cidade: ``cidade serve --mqtt`` (history on, access control on; --store sqlite, the
   default, or postgres in a schema of its own) with the service group provisioned; the same
   publisher for the same time; the figure is messages divided by the time from the first
   publish until every device's entity shows its last message (asked through the NGSI-LD API
   once publishing is over: the device of the last message ten times a second, then every
   device), so a backlog still queued in the broker counts;
3. catching up (--drain seconds, 0 skips): Cidade is stopped, the publisher sends --drain
   seconds of messages, which the broker keeps in Cidade's persistent session; the figure is
   those messages divided by the time from Cidade's restart until every entity shows them:
   Cidade's own rate with the whole machine to itself.

During phase 2, an operator's write through the NGSI-LD API every half second, timed: at full
device load it waits for the device batch the store's writer has in hand.

After phases 2 and 3, the CPU time each process spent per message: Cidade's server (the granian
worker, with the store's writer), its MQTT bridge process, the broker, and this process (the
publisher, then the reads watching for the last messages): where the time goes, run by run.

Aim (issue 5): >= 5,000 messages/s through Cidade and >= 50% of the broker's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil

from mqtt_broker import publish, subscriber
from run import PG_URL, drop_schema, free_port, make_admin_key, postgres_unavailable

NGSI = "/ngsi-ld/v1"


def start_broker(folder: Path) -> tuple[subprocess.Popen, int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        textwrap.dedent(
            f"""\
            listener {port} 127.0.0.1
            allow_anonymous true
            persistence true
            persistence_location {folder}/
            max_queued_messages 0
            """
        )
        + ("user root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    raise SystemExit("mosquitto did not start")


def payload(seq: int) -> bytes:
    return b'{"seq": %d, "no2": %d.25, "t": %d.5}' % (seq, seq % 90, 15 + seq % 20)


def broker_rate(port: int, seconds: float, devices: int, window: int) -> tuple[float, int, int]:
    apikey = f"alone{uuid.uuid4().hex[:6]}"
    ctx = multiprocessing.get_context("spawn")
    ready, result = ctx.Event(), ctx.Queue()
    process = ctx.Process(
        target=subscriber, args=("127.0.0.1", port, apikey, ready, result), daemon=True
    )
    process.start()
    if not ready.wait(15):
        raise SystemExit("the counting subscriber did not start")
    sent, _, _, _ = asyncio.run(
        publish("127.0.0.1", port, apikey, seconds, devices, window, body=payload)
    )
    received, span = result.get(timeout=300)
    process.join(10)
    return received / span if span else 0.0, sent, received


def start_cidade(store: str, broker_port: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIDADE_")}
    env.update({"CIDADE_RATE_LIMIT": "0", "CIDADE_MQTT_CLIENT_ID": "cidade-bench"})
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cidade.cli",
            "serve",
            "--port",
            str(port),
            "--store",
            store,
            "--mqtt",
            f"mqtt://127.0.0.1:{broker_port}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("cidade did not start")


class CpuMeter:
    """CPU time of the run's processes between ``start()`` and ``stop()``: Cidade's (the server
    and its children: the granian worker, the MQTT bridge process), the broker's and this
    process's (the publisher; then the reads that watch the entities)."""

    def __init__(self, cidade: int, broker: int) -> None:
        self.roots = {"cidade": psutil.Process(cidade), "broker": psutil.Process(broker)}
        self.spent: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {"publisher": time.process_time()}
        for name, root in self.roots.items():
            for process in [root, *root.children(recursive=True)]:
                try:
                    times = process.cpu_times()
                    label = name
                    if name == "cidade":
                        label = "bridge" if "mqtt_process" in " ".join(process.cmdline()) else name
                except psutil.Error:
                    continue  # gone meanwhile
                now[label] = now.get(label, 0.0) + times.user + times.system
        return now

    def start(self) -> None:
        self.spent = self._now()

    def stop(self) -> None:
        now = self._now()
        self.spent = {k: now[k] - self.spent.get(k, 0.0) for k in now}

    def per_message(self, messages: int) -> str:
        names = {"cidade": "server", "bridge": "bridge process", "broker": "broker"}
        names["publisher"] = "publisher and watcher"
        return ", ".join(
            f"{names[k]} {self.spent.get(k, 0.0) / messages * 1e6:.0f} µs"
            for k in ("cidade", "bridge", "broker", "publisher")
        )


class ApiProbe:
    """An operator's writes through the NGSI-LD API while devices publish: one attribute update
    every ``every`` seconds, each timed. At full device load a write waits for the device batch
    the store's writer has in hand: this says how long that is."""

    def __init__(self, base: str, headers: dict[str, str], every: float = 0.5) -> None:
        self.base, self.headers, self.every = base, headers, every
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.entity = "urn:ngsi-ld:Note:bench-operator"

    def start(self) -> None:
        with httpx.Client(timeout=60, headers=self.headers) as http:
            r = http.post(
                f"{self.base}{NGSI}/entities",
                json={"id": self.entity, "type": "Note", "text": {"type": "Property", "value": 0}},
            )
            r.raise_for_status()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        with httpx.Client(timeout=60, headers=self.headers) as http:
            n = 0
            while not self._stop.wait(self.every):
                n += 1
                start = time.perf_counter()
                r = http.patch(
                    f"{self.base}{NGSI}/entities/{self.entity}/attrs",
                    json={"text": {"type": "Property", "value": n}},
                )
                r.raise_for_status()
                self.latencies.append(time.perf_counter() - start)

    def summary(self) -> str:
        if not self.latencies:
            return "no API write was timed"
        ms = sorted(x * 1000 for x in self.latencies)
        p50, p95 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        return (
            f"an operator's API write while devices publish (every {self.every} s):"
            f" p50 {p50:.0f} ms, p95 {p95:.0f} ms, max {ms[-1]:.0f} ms ({len(ms)} writes)"
        )


def unwritten(http: httpx.Client, base: str, last: dict[int, int]) -> dict[int, int]:
    """The devices whose entity does not show its last message yet (read through the API,
    asking only for those still awaited, so that watching costs Cidade little)."""
    waiting: dict[int, int] = {}
    devices = sorted(last)
    for start in range(0, len(devices), 100):
        chunk = devices[start : start + 100]
        ids = ",".join(f"urn:ngsi-ld:AirQualityObserved:sensor-{d}" for d in chunk)
        r = http.get(
            f"{base}{NGSI}/entities",
            params={
                "id": ids,
                "type": "AirQualityObserved",
                "attrs": "seq",
                "options": "keyValues",
                "limit": "1000",
            },
        )
        r.raise_for_status()
        seen = {e["id"]: e.get("seq", -1) for e in r.json()}
        for d in chunk:
            if seen.get(f"urn:ngsi-ld:AirQualityObserved:sensor-{d}", -1) < last[d]:
                waiting[d] = last[d]
    return waiting


def wait_written(http: httpx.Client, base: str, last: dict[int, int]) -> None:
    """Until every device's entity shows its last message. Cidade writes messages in the order
    the broker hands them over, so the device of the very last one is watched alone first (ten
    times a second: reading every entity twice a second cost the server a tenth of its time),
    then every device is checked, and those still behind watched until they are not."""
    final = max(last, key=last.__getitem__)
    while unwritten(http, base, {final: last[final]}):
        time.sleep(0.1)
    while last:
        last = unwritten(http, base, last)
        if last:
            time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--window", type=int, default=64, help="publishes awaiting PUBACK")
    parser.add_argument(
        "--drain", type=float, default=10, help="seconds of messages queued while Cidade is down"
    )
    parser.add_argument(
        "--store", choices=("sqlite", "postgres"), default="sqlite", help="Cidade's store"
    )
    parser.add_argument("--postgres", default=PG_URL, help="PostgreSQL for --store postgres")
    args = parser.parse_args()
    schema = None
    if args.store == "postgres":
        reason = postgres_unavailable(args.postgres)
        if reason:
            raise SystemExit(f"PostgreSQL not usable at {args.postgres}: {reason}")
        schema = f"bench_devices_{os.getpid()}"
    drained = queued = 0.0
    folder = Path(tempfile.mkdtemp(prefix="cidade-devices-bench-"))
    broker, port = start_broker(folder)
    try:
        # The broker alone first: no Cidade session exists yet to queue these for.
        alone, sent_alone, received_alone = broker_rate(
            port, args.seconds, args.devices, args.window
        )
        store = f"{args.postgres}?schema={schema}" if schema else f"sqlite:///{folder}/cidade.db"
        auth = {"Authorization": f"Bearer {make_admin_key(store)}"}
        cidade, base = start_cidade(store, port)
        try:
            with httpx.Client(timeout=60, headers=auth) as http:
                group = {
                    "apikey": "bench",
                    "entity_type": "AirQualityObserved",
                    "attributes": [
                        {"object_id": "seq", "name": "seq", "type": "Integer"},
                        {"object_id": "no2", "name": "no2", "type": "Number"},
                        {"object_id": "t", "name": "temperature", "type": "Number"},
                    ],
                }
                http.post(f"{base}/iot/services", json={"services": [group]}).raise_for_status()
                time.sleep(1.0)  # the bridge connects
                probe = ApiProbe(base, auth)
                probe.start()
                through_cpu = CpuMeter(cidade.pid, broker.pid)
                through_cpu.start()
                sent, _, last, start = asyncio.run(
                    publish(
                        "127.0.0.1",
                        port,
                        "bench",
                        args.seconds,
                        args.devices,
                        args.window,
                        body=payload,
                    )
                )
                probe.stop()
                wait_written(http, base, last)
                through = sent / (time.perf_counter() - start)
                through_cpu.stop()
            if args.drain > 0:
                # Catching up: what devices sent while Cidade was down, from its restart.
                os.killpg(cidade.pid, signal.SIGTERM)
                cidade.wait(30)
                queued, _, last, _ = asyncio.run(
                    publish(
                        "127.0.0.1",
                        port,
                        "bench",
                        args.drain,
                        args.devices,
                        args.window,
                        first=sent + args.window,
                        body=payload,
                    )
                )
                restart = time.perf_counter()
                cidade, base = start_cidade(store, port)
                drain_cpu = CpuMeter(cidade.pid, broker.pid)
                drain_cpu.start()
                with httpx.Client(timeout=60, headers=auth) as http:
                    wait_written(http, base, last)
                drained = queued / (time.perf_counter() - restart)
                drain_cpu.stop()
        finally:
            os.killpg(cidade.pid, signal.SIGTERM)
            cidade.wait(30)
    finally:
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
        if schema:
            asyncio.run(drop_schema(args.postgres, schema))
    lost = f" ({sent_alone - received_alone} dropped)" if received_alone < sent_alone else ""
    print(f"broker alone: {alone:,.0f} messages/s received by a plain subscriber{lost}")
    print(
        f"through Cidade (publish -> entity updated, history on, {args.store}): {through:,.0f} "
        f"messages/s, {sent:,} messages in {args.seconds:.0f} s of publishing"
    )
    print(f"ratio to the broker: {through / alone:.3f}  (aim: >= 5,000/s and >= 0.5)")
    print(f"  CPU per message: {through_cpu.per_message(sent)}")
    print(f"  {probe.summary()}")
    if drained:
        print(
            f"catching up after a restart: {drained:,.0f} messages/s, {queued:,} messages"
            " queued while Cidade was down, from its start until every entity showed them"
        )
        print(f"  CPU per message: {drain_cpu.per_message(queued)}")


if __name__ == "__main__":
    main()
