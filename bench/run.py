"""Cidade benchmarks: each figure next to the layer underneath, measured in the same run.

    make bench            # or: .venv/bin/python bench/run.py [--entities N]

1. Batch upsert of N entities through HTTP (entities/s) vs raw SQLite inserts of the same rows
   (history off, as the floor has none), then the same upsert with history kept (the ratio).
2. GET one entity (requests/s, wrk) vs a bare handler on the same server.
3. q + geo query over N entities returning 100 (p50/p95 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson

HERE = Path(__file__).resolve().parent
NGSI = "/ngsi-ld/v1"
BATCH = 1000
# Porto's bounding box, roughly.
LON0, LON1, LAT0, LAT1 = -8.70, -8.55, 41.13, 41.19


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_entity(i: int, rng: random.Random) -> dict:
    return {
        "id": f"urn:ngsi-ld:AirQualityObserved:bench-{i}",
        "type": "AirQualityObserved",
        "no2": {"type": "Property", "value": round(rng.uniform(0, 120), 1), "unitCode": "GQ"},
        "pm10": {"type": "Property", "value": round(rng.uniform(0, 80), 1), "unitCode": "GQ"},
        "status": {"type": "Property", "value": rng.choice(["ok", "maintenance", "offline"])},
        "location": {
            "type": "GeoProperty",
            "value": {
                "type": "Point",
                "coordinates": [
                    round(rng.uniform(LON0, LON1), 6),
                    round(rng.uniform(LAT0, LAT1), 6),
                ],
            },
        },
    }


def start_server(db: Path, port: int, *, history: bool = False) -> subprocess.Popen:
    env = {
        **os.environ,
        "CIDADE_STORE": f"sqlite:///{db}",
        "CIDADE_MAX_BODY_BYTES": str(64 << 20),
        "CIDADE_HISTORY": "true" if history else "false",
    }
    env["PYTHONPATH"] = f"{HERE}:{env.get('PYTHONPATH', '')}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--no-ws",
            "--log-level",
            "warning",
            "benchapp:make",
        ],
        env=env,
        cwd=HERE,
        start_new_session=True,
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


def raw_sqlite_rate(entities: list[dict], path: Path) -> float:
    """The floor: the very rows Cidade writes for these entities (documents in the stored form,
    type rows, geometries, R*Tree boxes, discovery counters), prepared beforehand and inserted
    straight into SQLite with executemany, same schema and pragmas, one transaction per batch."""
    import asyncio
    from importlib import resources

    from cidade.hub import timefmt
    from cidade.hub.jsonld import ContextResolver
    from cidade.hub.model import normalize_entity
    from cidade.hub.query.geo import geometry_bbox

    terms = asyncio.run(ContextResolver().term_map(None))
    now = timefmt.now()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(
        resources.files("cidade.store.sqlite").joinpath("migrations/0001_hub.sql").read_text()
    )
    batches = []
    for s in range(0, len(entities), BATCH):
        docs, types, geos, boxes, stats = [], [], [], [], {}
        for rid, e in enumerate(entities[s : s + BATCH], s + 1):
            doc = normalize_entity(e, terms, now)
            docs.append((rid, "", doc["id"], orjson.dumps(doc).decode()))
            types.extend(("", t, rid) for t in doc["type"])
            for attr, instances in doc["attrs"].items():
                for inst in instances:
                    key = ("", doc["type"][0], attr, inst["type"])
                    stats[key] = stats.get(key, 0) + 1
                    if inst["type"] == "GeoProperty":
                        box = geometry_bbox(inst["value"])
                        geos.append((rid, "", rid, attr, orjson.dumps(inst["value"]).decode()))
                        boxes.append((rid, box[0], box[2], box[1], box[3]))
        batches.append((docs, types, geos, boxes, [(*k, n) for k, n in stats.items()]))
    start = time.perf_counter()
    for docs, types, geos, boxes, stats in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO entities(rid, tenant, id, doc) VALUES (?,?,?,?)", docs)
        conn.executemany("INSERT INTO entity_types(tenant, type, rid) VALUES (?,?,?)", types)
        conn.executemany(
            "INSERT INTO attr_stats VALUES (?,?,?,?,?) ON CONFLICT DO UPDATE"
            " SET instances = instances + excluded.instances",
            stats,
        )
        conn.executemany(
            "INSERT INTO geo_rows(gid, tenant, rid, attr, geometry) VALUES (?,?,?,?,?)", geos
        )
        conn.executemany("INSERT INTO geo_index VALUES (?,?,?,?,?)", boxes)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(entities) / elapsed


def http_upsert_rate(base: str, entities: list[dict], clients: int = 2) -> float:
    bodies = [orjson.dumps(entities[s : s + BATCH]) for s in range(0, len(entities), BATCH)]
    headers = {"Content-Type": "application/json"}

    def send(body: bytes, http: httpx.Client) -> None:
        r = http.post(f"{base}{NGSI}/entityOperations/upsert", content=body, headers=headers)
        assert r.status_code in (201, 204), r.text[:500]

    pools = [httpx.Client(timeout=120) for _ in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as ex:
        list(ex.map(lambda ib: send(ib[1], pools[ib[0] % clients]), enumerate(bodies)))
    elapsed = time.perf_counter() - start
    for p in pools:
        p.close()
    return len(entities) / elapsed


def wrk_rate(url: str, seconds: int = 10) -> float | None:
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def query_latency(base: str, rng: random.Random, n: int = 200) -> tuple[float, float, int]:
    times = []
    sizes = []
    with httpx.Client(timeout=30) as http:
        for _ in range(n):
            lon = rng.uniform(LON0 + 0.02, LON1 - 0.02)
            lat = rng.uniform(LAT0 + 0.01, LAT1 - 0.01)
            params = {
                "type": "AirQualityObserved",
                "q": 'no2>20;status=="ok"',
                "georel": "near;maxDistance==1500",
                "geometry": "Point",
                "coordinates": f"[{lon},{lat}]",
                "limit": "100",
            }
            t = time.perf_counter()
            r = http.get(f"{base}{NGSI}/entities", params=params)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.text[:300]
            sizes.append(len(r.json()))
    times.sort()
    return (
        statistics.median(times),
        times[int(len(times) * 0.95) - 1],
        int(statistics.median(sizes)),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk round")
    args = parser.parse_args()
    rng = random.Random(37120)
    entities = [make_entity(i, rng) for i in range(args.entities)]
    results: dict[str, object] = {"entities": args.entities}
    with tempfile.TemporaryDirectory() as tmp:
        raw = raw_sqlite_rate(entities, Path(tmp) / "raw.db")
        port = free_port()
        proc = start_server(Path(tmp) / "hub.db", port)
        base = f"http://127.0.0.1:{port}"
        try:
            upsert = http_upsert_rate(base, entities)
            results["upsert_entities_per_s"] = round(upsert)
            results["raw_sqlite_rows_per_s"] = round(raw)
            results["upsert_ratio_to_raw_sqlite"] = round(upsert / raw, 3)
            eid = entities[12345 % len(entities)]["id"]
            # Alternate the two, three rounds each, and keep the median of each and of the
            # per-round ratios: on a 2-core machine one round alone swings by a third.
            gets, bares = [], []
            for _ in range(3):
                bares.append(wrk_rate(f"{base}/bench/bare", args.seconds))
                gets.append(wrk_rate(f"{base}{NGSI}/entities/{eid}", args.seconds))
            if all(gets) and all(bares):
                results["get_entity_rps"] = round(statistics.median(gets))
                results["bare_handler_rps"] = round(statistics.median(bares))
                results["get_ratio_to_bare"] = round(
                    statistics.median(g / b for g, b in zip(gets, bares, strict=True)), 3
                )
            else:
                results["get_entity_rps"] = "wrk not installed (apt-get install wrk)"
            p50, p95, size = query_latency(base, rng)
            results["query_q_geo_p50_ms"] = round(p50, 2)
            results["query_q_geo_p95_ms"] = round(p95, 2)
            results["query_median_result_size"] = size
        finally:
            stop_server(proc)
        # The same upsert with history kept (every attribute change recorded for the temporal
        # API), next to the run without it above.
        port = free_port()
        proc = start_server(Path(tmp) / "hub-history.db", port, history=True)
        try:
            with_history = http_upsert_rate(f"http://127.0.0.1:{port}", entities)
            results["upsert_with_history_entities_per_s"] = round(with_history)
            results["history_ratio_to_no_history"] = round(with_history / upsert, 3)
        finally:
            stop_server(proc)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
