"""Notification latency: from an update sent to the hub to the notification received by an HTTP
endpoint, at a steady 1,000 updates/s, on both stores.

    .venv/bin/python bench/notify.py [--store sqlite|postgres|both] [--seconds 10] [--rate 1000]

Each update carries the time it was sent; the receiver (a bare asyncio HTTP/1.1 server in this
process) subtracts it from the time the notification arrives. Two shapes of load:
  - single: one PATCH .../attrs per update (1,000 requests/s, each its own transaction and
    notification), the harshest case;
  - batch:  ten batch upserts of 100 entities per second (how gateways and the IoT agent write),
    one notification of 100 entities each.
The layer underneath: the same client POSTing the same bodies straight to the same receiver
(a bare HTTP round trip on this machine, same run). Aim: notification p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import orjson

from run import make_admin_key

NGSI = "/ngsi-ld/v1"
PG_URL = os.environ.get("CIDADE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """Keep-alive HTTP/1.1 endpoint in a process of its own (so it never waits for this one's
    GIL), recording per entity notified: now - its sent time."""

    def __init__(self) -> None:
        self.port = free_port()
        self.pipe, child = multiprocessing.Pipe()
        self.process = multiprocessing.Process(
            target=_receive, args=(self.port, child), daemon=True
        )
        self.process.start()
        assert self.pipe.recv() == "ready"

    def take(self) -> list[float]:
        self.pipe.send("take")
        return self.pipe.recv()

    def close(self) -> None:
        self.pipe.send("stop")
        self.process.join(5)


def _receive(port: int, pipe) -> None:
    latencies: list[float] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                now = time.time()
                for item in orjson.loads(body).get("data", ()):
                    sent = item.get("sent")
                    if isinstance(sent, dict):
                        sent = sent.get("value")
                    if sent is not None:
                        latencies.append(now - sent)
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        await asyncio.start_server(serve, "127.0.0.1", port)
        pipe.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "stop":
                return
            pipe.send(list(latencies))
            latencies.clear()

    asyncio.run(main())


def start_server(store: str, port: int, workers: int = 1) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CIDADE_")}
    env.update(
        {
            "CIDADE_RATE_LIMIT": "0",
            # The receiver is on loopback, which notification endpoints may not name unless
            # the deployment allows it (docs/security.md).
            "CIDADE_PRIVATE_NETWORKS": "127.0.0.0/8",
            "CIDADE_HISTORY": "true",
            "CIDADE_MAX_BODY_BYTES": str(64 << 20),
            "CIDADE_WORKERS": str(workers),
        }
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "cidade.cli", "serve", "--port", str(port), "--store", store],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit("server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


async def paced(total: int, per_second: float, send, concurrency: int = 32) -> float:
    """Call ``send(i)`` for i in range(total) at ``per_second``; the achieved rate."""
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def worker() -> None:
        while (i := await queue.get()) is not None:
            await send(i)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    start = time.perf_counter()
    for i in range(total):
        due = start + i / per_second
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(i)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return total / (time.perf_counter() - start)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


async def run_store(
    kind: str, seconds: float, rate: float, receiver: Receiver, workers: int = 1
) -> dict:
    schema = None
    if kind == "postgres":
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        store = f"{PG_URL}?schema={schema}"
    else:
        folder = tempfile.mkdtemp(prefix="cidade-bench-")
        store = f"sqlite:///{Path(folder) / 'notify.db'}"
    port = free_port()
    key = make_admin_key(store)  # access control on, as deployed
    proc = start_server(store, port, workers)
    base = f"http://127.0.0.1:{port}{NGSI}"
    endpoint = f"http://127.0.0.1:{receiver.port}/notify"
    figures: dict = {}
    try:
        # aiohttp, not httpx: one Python process has to send 1,000 requests/s here, and httpx
        # tops out near 400/s on these cores (its per-request cost, measured).
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        ) as http:

            async def call(method: str, url: str, body: object) -> int:
                async with http.request(
                    method,
                    url,
                    data=orjson.dumps(body),
                    headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"},
                ) as r:
                    await r.read()
                    return r.status

            status = await call(
                "POST",
                f"{base}/subscriptions",
                {
                    "type": "Subscription",
                    "entities": [{"type": "TrafficFlowObserved"}],
                    "watchedAttributes": ["sent"],
                    "notification": {"endpoint": {"uri": endpoint}, "attributes": ["sent"]},
                },
            )
            assert status == 201, status
            ids = [f"urn:ngsi-ld:TrafficFlowObserved:bench-{i}" for i in range(100)]
            batch = [
                {"id": i, "type": "TrafficFlowObserved", "sent": {"type": "Property", "value": 0}}
                for i in ids
            ]
            status = await call("POST", f"{base}/entityOperations/upsert", batch)
            assert status in (201, 204), status
            await asyncio.sleep(1.0)
            receiver.take()
            total = int(seconds * rate)

            async def single(i: int) -> None:
                body = {"sent": {"type": "Property", "value": time.time()}}
                status = await call("PATCH", f"{base}/entities/{ids[i % 100]}/attrs", body)
                assert status == 204, status

            achieved = await paced(total, rate, single)
            await asyncio.sleep(2.0)
            got = receiver.take()
            figures["single"] = (achieved, len(got), total, pct(got, 0.5), pct(got, 0.99))

            async def batched(i: int) -> None:
                now = time.time()
                body = [
                    {
                        "id": e,
                        "type": "TrafficFlowObserved",
                        "sent": {"type": "Property", "value": now},
                    }
                    for e in ids
                ]
                status = await call("POST", f"{base}/entityOperations/upsert?options=update", body)
                assert status == 204, status

            batches = int(seconds * rate / 100)
            achieved = await paced(batches, rate / 100, batched, concurrency=4) * 100
            await asyncio.sleep(2.0)
            got = receiver.take()
            figures["batch"] = (achieved, len(got), batches * 100, pct(got, 0.5), pct(got, 0.99))

            async def bare(i: int) -> None:
                body = {"data": [{"id": ids[i % 100], "sent": time.time()}]}
                assert await call("POST", endpoint, body) == 204

            achieved = await paced(total, rate, bare)
            await asyncio.sleep(0.5)
            got = receiver.take()
            figures["bare"] = (achieved, len(got), total, pct(got, 0.5), pct(got, 0.99))
    finally:
        stop_server(proc)
        if schema:
            import asyncpg

            conn = await asyncpg.connect(PG_URL)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--workers", type=int, default=1, help="cidade serve worker processes")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    receiver = Receiver()
    print(
        f"notification latency at {args.rate:.0f} updates/s for {args.seconds:.0f} s,"
        f" {args.workers} worker(s)"
    )
    print(f"{'store':9} {'load':7} {'updates/s':>10} {'received':>13} {'p50 ms':>8} {'p99 ms':>8}")
    for kind in kinds:
        figures = asyncio.run(run_store(kind, args.seconds, args.rate, receiver, args.workers))
        for load in ("single", "batch", "bare"):
            achieved, got, total, p50, p99 = figures[load]
            label = "bare POST" if load == "bare" else load
            print(
                f"{kind:9} {label:9} {achieved:>8.0f} {got:>6}/{total:<6} {p50:>8.1f} {p99:>8.1f}"
            )
    receiver.close()
    print("aim: notification p99 <= 50 ms; 'bare POST' is the layer underneath (same client,")
    print("same receiver, no hub in between)")


if __name__ == "__main__":
    main()
