"""Cidade benchmarks: each figure next to the layer underneath, measured in the same run.

    make bench            # or: .venv/bin/python bench/run.py [options]
    .venv/bin/python bench/run.py --only history,temporal --store postgres
    .venv/bin/python bench/run.py --only upsert,get,query --entities 20000 --json out.json

The machine this runs on may be small and noisy, so no figure is meaningful alone: each one is
printed next to the layer underneath it, measured in the same run, and the ratio of the two is
what to compare between runs. Parts (``--only``, comma-separated; all by default):

upsert    Batch upsert of N entities (``--entities``, 1,000 per request, 2 clients) through HTTP
          (entities/s) vs raw SQLite inserts of the very rows Cidade writes for them (executemany,
          one transaction per batch, same schema and pragmas), history off. SQLite only.
get       GET one entity (requests/s, wrk, 3 alternating rounds) vs a bare handler on the same
          granian + Starlette server. SQLite only.
query     q + geo query over the N entities returning 100 (p50/p95 ms, 200 requests). SQLite only.
history   Batch upsert with history kept vs without, on each store of ``--store``: entities/s
          both ways and their ratio (aim: with history >= 0.70 of without, i.e. history costs
          < 30%), each next to the raw floor of the same rows, with and without their history
          rows: raw sqlite3 executemany on SQLite, asyncpg COPY (copy_records_to_table) on
          PostgreSQL, one transaction per batch. ``--history-entities`` entities, fresh stores,
          ``--rounds`` alternating rounds, medians (of the per-round ratios for ratios).
temporal  A year of 15-minute readings (35,040 instances of ``no2``, plus as many of ``pm10`` so
          the attribute filter has something to skip) of one entity, loaded through
          POST /temporal/entities then POST /temporal/entities/{id}/attrs in chunks of 5,000
          instances (the fastest way in: a batch upsert records one instance per entity per
          request). Then, ``--requests`` times each, alternating with the equivalent raw SQL
          query on the store's history tables (timed the same way, from this process):
          GET /temporal/entities/{id}?attrs=no2&timerel=between&timeAt=..&endTimeAt=.. (all
          35,040 instances, normalized; Cidade caps no instances per response) vs SELECT of the
          rows; and the same with options=aggregatedValues&aggrMethods=avg,min,max&
          aggrPeriodDuration=P1D (365 periods) vs GROUP BY day in SQL (aim: p95 <= 100 ms).
          p50/p95 ms, on each store of ``--store``.

``--store sqlite|postgres|both`` (default both) picks the stores of history and temporal.
PostgreSQL is reached at ``--postgres`` (default postgresql://postgres@127.0.0.1:5432/test, or
CIDADE_BENCH_POSTGRES); every store lives in a schema of its own (bench_<pid>_<n>), dropped at the
end. Ratios are "measured / layer underneath": a fraction of the floor for rates, how many times
the floor for latencies (for "history on / off": Cidade's ratio over the floor's). The default run
takes about four minutes on two cores; ``--json FILE`` also writes every figure as JSON (the
upsert, get and query keys as the first version of this benchmark printed them).

Reading the figures: at the raw layer, history rows cost about as much as the entity rows
themselves (four rows per new entity, one per attribute), so "history on / off" is about 0.5 for
the floor; Cidade's fixed per-request costs dilute it to 0.55-0.72 depending on the store and the
run. The per-day aggregation parses every instance's JSON (in Python, or json_extract / ->> in the
SQL floor), which is what keeps both above 100 ms on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

HERE = Path(__file__).resolve().parent
NGSI = "/ngsi-ld/v1"
BATCH = 1000
# Porto's bounding box, roughly.
LON0, LON1, LAT0, LAT1 = -8.70, -8.55, 41.13, 41.19
PARTS = ("upsert", "get", "query", "history", "temporal")
STORES = ("sqlite", "postgres")
PG_URL = os.environ.get("CIDADE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
DEFAULT_CONTEXT = "https://uri.etsi.org/ngsi-ld/default-context/"

# The temporal series: a year of 15-minute readings.
YEAR_START = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_END = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(minutes=15)
SERIES_ID = "urn:ngsi-ld:AirQualityObserved:bench-series"
LOAD_CHUNK = 5000


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


# -- stores and servers -------------------------------------------------------------------------


class Stores:
    """Fresh, empty stores: SQLite files in a temporary folder, PostgreSQL schemas of their own
    (all dropped by ``cleanup``)."""

    def __init__(self, folder: Path, pg_url: str) -> None:
        self.folder = folder
        self.pg_url = pg_url
        self.count = 0
        self.schemas: list[str] = []

    def fresh(self, kind: str) -> tuple[str, str]:
        """(store URL, SQLite path or PostgreSQL schema) of a new, empty store."""
        self.count += 1
        if kind == "sqlite":
            path = self.folder / f"store-{self.count}.db"
            return f"sqlite:///{path}", str(path)
        schema = f"bench_{os.getpid()}_{self.count}"
        self.schemas.append(schema)
        return f"{self.pg_url}?schema={schema}", schema

    def drop(self, kind: str, where: str) -> None:
        if kind == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(where + suffix).unlink(missing_ok=True)
        else:
            asyncio.run(drop_schema(self.pg_url, where))
            self.schemas.remove(where)

    def cleanup(self) -> None:
        for schema in list(self.schemas):
            with contextlib.suppress(Exception):
                self.drop("postgres", schema)


async def drop_schema(url: str, schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def postgres_unavailable(url: str) -> str | None:
    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS postgis SCHEMA public")
        finally:
            await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def admin_key(store: str) -> dict[str, str]:
    """Headers of a platform administrator's API key on ``store``, made with the CLI as an
    operator would: the benchmarks run with access control on, as deployed."""
    return {"Authorization": f"Bearer {make_admin_key(store)}"}


def make_admin_key(store: str) -> str:
    cli = [sys.executable, "-m", "cidade.cli"]
    # The user and key commands never make a store: an operator migrates one first.
    subprocess.run([*cli, "migrate", "--store", store], check=True, capture_output=True)
    subprocess.run(
        [
            *cli,
            "user",
            "add",
            "bench",
            "--role",
            "admin",
            "--tenant",
            "*",
            "--no-password",
            "--if-absent",
            "--store",
            store,
        ],
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*cli, "key", "add", "--owner", "bench", "--store", store],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def start_server(
    store: str, port: int, *, history: bool = False, auth: bool = True
) -> subprocess.Popen:
    env = {
        **os.environ,
        "CIDADE_STORE": store,
        "CIDADE_AUTH": "true" if auth else "false",
        "CIDADE_RATE_LIMIT": "0",
        "CIDADE_MAX_BODY_BYTES": str(64 << 20),
        "CIDADE_HISTORY": "true" if history else "false",
        # The raw year query is measured as one response of all 35,040 instances (by default
        # the server pages them 10,000 at a time, with 206 and Content-Range).
        "CIDADE_TEMPORAL_MAX_INSTANCES": "50000",
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
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        time.sleep(0.1)
    raise SystemExit("server did not start")


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@contextlib.contextmanager
def serving(
    stores: Stores, kind: str, *, history: bool
) -> Iterator[tuple[str, str, dict[str, str]]]:
    """A server on a fresh store: (base URL, SQLite path or PostgreSQL schema, headers of an
    administrator's API key); the store is dropped afterwards."""
    url, where = stores.fresh(kind)
    headers = admin_key(url)
    port = free_port()
    proc = start_server(url, port, history=history)
    try:
        yield f"http://127.0.0.1:{port}", where, headers
    finally:
        stop_server(proc)
        stores.drop(kind, where)


# -- the floor of a batch upsert: the rows Cidade writes, inserted raw ---------------------------


@dataclass
class RawBatch:
    docs: list[tuple[int, str, list[str], dict]] = field(default_factory=list)  # rid, id, types
    types: list[tuple[str, int]] = field(default_factory=list)  # SQLite's entity_types
    geos: list[tuple[int, int, str, dict]] = field(default_factory=list)  # gid, rid, attr, value
    stats: dict[tuple[str, str, str], int] = field(default_factory=dict)
    history: list[tuple] = field(default_factory=list)  # (entity id, *HistoryRow)


def raw_batches(entities: list[dict]) -> list[RawBatch]:
    """The very rows Cidade writes for these entities, in the stored form, batch by batch."""
    from cidade.hub.jsonld import ContextResolver
    from cidade.hub.model import normalize_entity
    from cidade.ngsild import timefmt
    from cidade.store.history import changed_instances

    terms = asyncio.run(ContextResolver().term_map(None))
    now = timefmt.now()
    batches = []
    for s in range(0, len(entities), BATCH):
        batch = RawBatch()
        for rid, e in enumerate(entities[s : s + BATCH], s + 1):
            doc = normalize_entity(e, terms, now)
            batch.docs.append((rid, doc["id"], doc["type"], doc))
            batch.types.extend((t, rid) for t in doc["type"])
            keys = [(t, "", "") for t in doc["type"]]  # as cidade.store.changes counts
            for attr, instances in doc["attrs"].items():
                for inst in instances:
                    keys.append(("", attr, inst["type"]))
                    keys.extend((t, attr, inst["type"]) for t in doc["type"])
                    if inst["type"] == "GeoProperty":
                        batch.geos.append((len(batch.geos) + s + 1, rid, attr, inst["value"]))
            for key in keys:
                batch.stats[key] = batch.stats.get(key, 0) + 1
            batch.history.extend((doc["id"], *row) for row in changed_instances(None, doc))
        batches.append(batch)
    return batches


def raw_sqlite_rate(batches: list[RawBatch], n: int, path: Path, *, history: bool) -> float:
    """The floor on SQLite: the prepared rows inserted straight into a fresh database with
    executemany, same schema and pragmas as Cidade, one transaction per batch."""
    from cidade.ngsild.query.geo import geometry_bbox
    from cidade.store.sqlite.history import INSERT_HISTORY, record
    from cidade.store.sqlite.store import migrations

    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for _, sql in migrations():
        conn.executescript(sql)
    rows = []
    series: dict[tuple[str, str], int] = {}  # numbered as the store numbers them
    for b in batches:
        new_series = []
        for e, a, *_ in b.history if history else ():
            if (e, a) not in series:
                series[(e, a)] = len(series) + 1
                new_series.append((series[(e, a)], "", e, a))
        rows.append(
            (
                [("", rid, eid, orjson.dumps(doc).decode()) for rid, eid, _, doc in b.docs],
                [("", t, rid) for t, rid in b.types],
                [("", *k, v) for k, v in b.stats.items()],
                [(g, "", rid, a, orjson.dumps(v).decode()) for g, rid, a, v in b.geos],
                [
                    (g, *(lambda x: (x[0], x[2], x[1], x[3]))(geometry_bbox(v)))
                    for g, _, _, v in b.geos
                ],
                new_series,
                [record(series[(e, row[0])], row) for e, *row in b.history] if history else [],
            )
        )
    start = time.perf_counter()
    for docs, types, stats, geos, boxes, new_series, hist in rows:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO entities(tenant, rid, id, doc) VALUES (?,?,?,?)", docs)
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
        conn.executemany(
            "INSERT INTO history_series(sid, tenant, entity_id, attr) VALUES (?,?,?,?)", new_series
        )
        conn.executemany(INSERT_HISTORY, hist)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


async def _raw_postgres(batches: list[RawBatch], n: int, url: str, *, history: bool) -> float:
    import asyncpg
    import shapely

    from cidade.store.postgres.migrations import migrate
    from cidade.store.postgres.store import parse_url

    dsn, settings, schema = parse_url(url)
    conn = await asyncpg.connect(dsn, server_settings=settings)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await migrate(conn)
        # geometry in binary COPY: EWKB, prepared beforehand like every other row.
        await conn.set_type_codec(
            "geometry", schema="public", encoder=bytes, decoder=bytes, format="binary"
        )
        ts = datetime.fromisoformat
        rows = []
        months: set[str] = set()
        for b in batches:
            geoms = shapely.from_geojson([orjson.dumps(v).decode() for _, _, _, v in b.geos])
            wkb = shapely.to_wkb(shapely.set_srid(geoms, 4326), include_srid=True)
            hist = []
            if history:
                for e, a, d, i, t, o, m, c, inst in b.history:
                    months.add(t[:7])
                    tso = ts(o) if o else None
                    hist.append(("", e, a, d, i, ts(t), tso, ts(m), ts(c), orjson.dumps(inst)))
            rows.append(
                (
                    [
                        (rid, "", eid, types, orjson.dumps(doc).decode())
                        for rid, eid, types, doc in b.docs
                    ],
                    [(g, "", rid, a, w) for (g, rid, a, _), w in zip(b.geos, wkb, strict=True)],
                    [("", *k, v) for k, v in b.stats.items()],
                    [(*r[:9], r[9].decode()) for r in hist],
                )
            )
        for month in sorted(months):  # the partitions exist before the clock starts
            start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            end = (start + timedelta(days=32)).replace(day=1)
            await conn.execute(
                f'CREATE TABLE "attr_history_{start:%Y_%m}" PARTITION OF attr_history'
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        start = time.perf_counter()
        for docs, geos, stats, hist in rows:
            async with conn.transaction():
                await conn.execute("INSERT INTO tenants(name) VALUES ('') ON CONFLICT DO NOTHING")
                await conn.copy_records_to_table(
                    "entities",
                    records=docs,
                    columns=["rid", "tenant", "id", "types", "doc"],
                    schema_name=schema,
                )
                await conn.copy_records_to_table(
                    "geo_rows",
                    records=geos,
                    columns=["gid", "tenant", "rid", "attr", "geom"],
                    schema_name=schema,
                )
                await conn.executemany(
                    "INSERT INTO attr_stats VALUES ($1, $2, $3, $4, $5)"
                    " ON CONFLICT (tenant, type, attr, kind)"
                    " DO UPDATE SET instances = attr_stats.instances + excluded.instances",
                    stats,
                )
                if hist:
                    await conn.copy_records_to_table(
                        "attr_history",
                        records=hist,
                        columns=[
                            "tenant",
                            "entity_id",
                            "attr",
                            "dataset_id",
                            "instance_id",
                            "time",
                            "observed_at",
                            "modified_at",
                            "created_at",
                            "instance",
                        ],
                        schema_name=schema,
                    )
        elapsed = time.perf_counter() - start
    finally:
        await conn.close()
    return n / elapsed


def raw_rate(stores: Stores, kind: str, batches: list[RawBatch], n: int, *, history: bool) -> float:
    url, where = stores.fresh(kind)
    try:
        if kind == "sqlite":
            return raw_sqlite_rate(batches, n, Path(where), history=history)
        return asyncio.run(_raw_postgres(batches, n, url, history=history))
    finally:
        stores.drop(kind, where)


# -- HTTP clients ---------------------------------------------------------------------------------


def http_upsert_rate(
    base: str, entities: list[dict], auth: dict[str, str], clients: int = 2
) -> float:
    bodies = [orjson.dumps(entities[s : s + BATCH]) for s in range(0, len(entities), BATCH)]
    headers = {"Content-Type": "application/json", **auth}

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


def wrk_rate(url: str, seconds: int = 10, headers: dict[str, str] | None = None) -> float | None:
    if not shutil.which("wrk"):
        return None
    extra = [a for k, v in (headers or {}).items() for a in ("-H", f"{k}: {v}")]
    out = subprocess.run(
        ["wrk", "-t1", "-c32", f"-d{seconds}s", *extra, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def query_latency(
    base: str, rng: random.Random, auth: dict[str, str], n: int = 200
) -> tuple[float, float, int]:
    times = []
    sizes = []
    with httpx.Client(timeout=30, headers=auth) as http:
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
    p50, p95 = percentiles(times)
    return p50, p95, int(statistics.median(sizes))


def percentiles(times_ms: list[float]) -> tuple[float, float]:
    """p50 and p95 (nearest rank)."""
    ordered = sorted(times_ms)
    return statistics.median(ordered), ordered[max(0, math.ceil(len(ordered) * 0.95) - 1)]


# -- the report -----------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    store: str
    measured: str
    floor: str = ""  # the layer underneath
    ratio: str = ""
    aim: str = ""
    verdict: str = ""


class Report:
    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.results: dict[str, Any] = {}

    def add(self, row: Row) -> None:
        self.rows.append(row)
        under = f"  (under: {row.floor}; ratio {row.ratio})" if row.floor else ""
        print(f"  {row.store:8} {row.figure}: {row.measured}{under}", flush=True)

    def table(self) -> str:
        head = Row("figure", "store", "measured", "layer underneath", "ratio", "aim", "")
        rows = [head, *self.rows]
        cols = ["figure", "store", "measured", "floor", "ratio", "aim", "verdict"]
        width = {c: max(len(getattr(r, c)) for r in rows) for c in cols}
        lines = []
        for k, r in enumerate(rows):
            lines.append("  ".join(getattr(r, c).ljust(width[c]) for c in cols).rstrip())
            if k == 0:
                lines.append("  ".join("-" * width[c] for c in cols).rstrip())
        return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def rate(v: float) -> str:
    return f"{v:,.0f}/s"


def ms(p50: float, p95: float) -> str:
    return f"p50 {p50:.1f} / p95 {p95:.1f} ms"


# -- parts --------------------------------------------------------------------------------------


def part_core(args: argparse.Namespace, parts: set[str], stores: Stores, report: Report) -> None:
    """upsert, get, query: one SQLite server loaded with --entities entities (history off)."""
    rng = random.Random(37120)
    entities = [make_entity(i, rng) for i in range(args.entities)]
    res = report.results
    res["entities"] = args.entities
    raw = None
    if "upsert" in parts:
        raw = raw_rate(stores, "sqlite", raw_batches(entities), len(entities), history=False)
    with serving(stores, "sqlite", history=False) as (base, where, auth):
        upsert = http_upsert_rate(base, entities, auth)
        if raw is not None:
            res["upsert_entities_per_s"] = round(upsert)
            res["raw_sqlite_rows_per_s"] = round(raw)
            res["upsert_ratio_to_raw_sqlite"] = round(upsert / raw, 3)
            report.add(
                Row(
                    f"batch upsert, {args.entities:,} entities",
                    "sqlite",
                    rate(upsert),
                    f"raw sqlite3 {rate(raw)}",
                    f"{upsert / raw:.3f}",
                )
            )
        if "get" in parts:
            eid = entities[12345 % len(entities)]["id"]
            # Alternate the two, three rounds each, and keep the median of each and of the
            # per-round ratios: on a 2-core machine one round alone swings by a third.
            # The same store served a second time with access control off: what the gate
            # (key lookup, cached; tenant; permission; rate bucket) costs per request.
            open_port = free_port()
            open_server = start_server(f"sqlite:///{where}", open_port, auth=False)
            gets, bares, opens = [], [], []
            try:
                open_url = f"http://127.0.0.1:{open_port}{NGSI}/entities/{eid}"
                for turn in range(4):
                    bares.append(wrk_rate(f"{base}/bench/bare", args.seconds))
                    # Which server goes first alternates: the second of two runs back to back
                    # finds the machine warmer (or busier).
                    if turn % 2:
                        opens.append(wrk_rate(open_url, args.seconds))
                    gets.append(wrk_rate(f"{base}{NGSI}/entities/{eid}", args.seconds, auth))
                    if not turn % 2:
                        opens.append(wrk_rate(open_url, args.seconds))
            finally:
                stop_server(open_server)
            if all(gets) and all(opens):
                gate = statistics.median(g / o for g, o in zip(gets, opens, strict=True))
                res["get_entity_no_access_control_rps"] = round(statistics.median(opens))
                res["get_ratio_with_to_without_access_control"] = round(gate, 3)
                report.add(
                    Row(
                        "GET one entity with an API key (wrk -c32)",
                        "sqlite",
                        f"{statistics.median(gets):,.0f} req/s",
                        f"access control off {statistics.median(opens):,.0f} req/s",
                        f"{gate:.3f}",
                    )
                )
            pairs = [(g, b) for g, b in zip(gets, bares, strict=True) if g and b]
            if len(pairs) == len(gets):
                g = statistics.median(p[0] for p in pairs)
                b = statistics.median(p[1] for p in pairs)
                ratio = statistics.median(x / y for x, y in pairs)
                res["get_entity_rps"] = round(g)
                res["bare_handler_rps"] = round(b)
                res["get_ratio_to_bare"] = round(ratio, 3)
                report.add(
                    Row(
                        "GET one entity (wrk -c32)",
                        "sqlite",
                        f"{g:,.0f} req/s",
                        f"bare handler {b:,.0f} req/s",
                        f"{ratio:.3f}",
                    )
                )
            else:
                res["get_entity_rps"] = "wrk not installed (apt-get install wrk)"
        if "query" in parts:
            p50, p95, size = query_latency(base, rng, auth)
            res["query_q_geo_p50_ms"] = round(p50, 2)
            res["query_q_geo_p95_ms"] = round(p95, 2)
            res["query_median_result_size"] = size
            report.add(Row(f"q + geo query, {size} of {args.entities:,}", "sqlite", ms(p50, p95)))


def part_history(args: argparse.Namespace, kind: str, stores: Stores, report: Report) -> None:
    """Batch upsert with history vs without, on one store, next to the raw floor of each."""
    rng = random.Random(4711)
    n = args.history_entities
    entities = [make_entity(i, rng) for i in range(n)]
    batches = raw_batches(entities)
    got: dict[str, list[float]] = {"raw": [], "raw_h": [], "http": [], "http_h": []}
    for _ in range(args.rounds):
        # Alternate everything within a round, so a noisy stretch hits both sides of a ratio.
        got["raw"].append(raw_rate(stores, kind, batches, n, history=False))
        got["raw_h"].append(raw_rate(stores, kind, batches, n, history=True))
        for history in (False, True):
            with serving(stores, kind, history=history) as (base, _, auth):
                got["http_h" if history else "http"].append(http_upsert_rate(base, entities, auth))
    med = {k: statistics.median(v) for k, v in got.items()}

    def per_round(a: str, b: str) -> float:
        return statistics.median(x / y for x, y in zip(got[a], got[b], strict=True))

    ratio = per_round("http_h", "http")
    raw_ratio = per_round("raw_h", "raw")
    floor_name = "raw sqlite3" if kind == "sqlite" else "asyncpg COPY"
    label = f"{n:,} entities"
    report.add(
        Row(
            f"batch upsert, history off, {label}",
            kind,
            rate(med["http"]),
            f"{floor_name} {rate(med['raw'])}",
            f"{per_round('http', 'raw'):.3f}",
        )
    )
    report.add(
        Row(
            f"batch upsert, history on, {label}",
            kind,
            rate(med["http_h"]),
            f"{floor_name} + history rows {rate(med['raw_h'])}",
            f"{per_round('http_h', 'raw_h'):.3f}",
        )
    )
    report.add(
        Row(
            "history on / off (upsert throughput)",
            kind,
            f"{ratio:.3f}",
            f"{floor_name}: {raw_ratio:.3f}",
            f"{ratio / raw_ratio:.3f}",
            ">= 0.70",
            verdict(ratio >= 0.70),
        )
    )
    res = report.results
    res[f"history_{kind}"] = {
        "entities": n,
        "rounds": args.rounds,
        "upsert_entities_per_s": round(med["http"]),
        "upsert_with_history_entities_per_s": round(med["http_h"]),
        "raw_rows_per_s": round(med["raw"]),
        "raw_with_history_rows_per_s": round(med["raw_h"]),
        "history_ratio_to_no_history": round(ratio, 3),
        "raw_history_ratio": round(raw_ratio, 3),
    }
    if kind == "sqlite":  # the names the first version of this benchmark used
        res["upsert_with_history_entities_per_s"] = round(med["http_h"])
        res["history_ratio_to_no_history"] = round(ratio, 3)


def series_values(attr_seed: int) -> list[tuple[str, float]]:
    rng = random.Random(attr_seed)
    out = []
    t = YEAR_START
    k = 0
    while t < YEAR_END:
        daily = math.sin(2 * math.pi * (k % 96) / 96)
        out.append(
            (t.isoformat().replace("+00:00", "Z"), round(40 + 15 * daily + rng.gauss(0, 6), 1))
        )
        t += STEP
        k += 1
    return out


def load_series(base: str, auth: dict[str, str]) -> tuple[int, float]:
    """A year of 15-minute no2 and pm10 readings of one entity, in chunks; (instances, s)."""
    series = {"no2": series_values(1), "pm10": series_values(2)}
    n = len(series["no2"])
    headers = {"Content-Type": "application/json", **auth}
    start = time.perf_counter()
    with httpx.Client(timeout=300) as http:
        for s in range(0, n, LOAD_CHUNK):
            body: dict[str, Any] = {
                name: [
                    {"type": "Property", "value": v, "observedAt": t, "unitCode": "GQ"}
                    for t, v in values[s : s + LOAD_CHUNK]
                ]
                for name, values in series.items()
            }
            if s == 0:
                body = {"id": SERIES_ID, "type": "AirQualityObserved", **body}
                r = http.post(
                    f"{base}{NGSI}/temporal/entities", content=orjson.dumps(body), headers=headers
                )
                assert r.status_code == 201, r.text[:500]
            else:
                r = http.post(
                    f"{base}{NGSI}/temporal/entities/{SERIES_ID}/attrs",
                    content=orjson.dumps(body),
                    headers=headers,
                )
                assert r.status_code == 204, r.text[:500]
    return n * len(series), time.perf_counter() - start


class SqlFloor:
    """The equivalent raw SQL queries on the store's history tables, run from this process."""

    RAW = (
        "SELECT instance_id, time, instance FROM attr_history WHERE tenant = '' AND entity_id = {0}"
        " AND attr = {1} AND time >= {2} AND time < {3} ORDER BY time"
    )
    # SQLite's history names its series by number (cidade/store/sqlite/history.py).
    RAW_SQLITE = (
        "SELECT h.instance_id, h.time, h.instance, h.num FROM history_series s"
        " JOIN attr_history h ON h.sid = s.sid WHERE s.tenant = '' AND s.entity_id = ?"
        " AND s.attr = ? AND h.time >= ? AND h.time < ? ORDER BY h.time"
    )

    def __init__(self, kind: str, where: str, pg_url: str) -> None:
        self.kind = kind
        attr = DEFAULT_CONTEXT + "no2"
        lo, hi = YEAR_START, YEAR_END
        if kind == "sqlite":
            self.conn = sqlite3.connect(where)
            stored = [
                t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z" for t in (lo, hi)
            ]
            self.params: tuple = (SERIES_ID, attr, *stored)
            self.raw_sql = self.RAW_SQLITE
            self.agg_sql = (
                "SELECT substr(time, 1, 10) AS day, count(*), avg(v), min(v), max(v) FROM"
                " (SELECT h.time, h.num AS v FROM history_series s JOIN attr_history h"
                " ON h.sid = s.sid WHERE s.tenant = '' AND s.entity_id = ? AND s.attr = ?"
                " AND h.time >= ? AND h.time < ?) GROUP BY day ORDER BY day"
            )
        else:
            import asyncpg

            self.loop = asyncio.new_event_loop()
            self.conn = self.loop.run_until_complete(
                asyncpg.connect(pg_url, server_settings={"search_path": f'"{where}", public'})
            )
            self.params = (SERIES_ID, attr, lo, hi)
            self.raw_sql = self.RAW.format("$1", "$2", "$3", "$4")
            self.agg_sql = (
                "SELECT date_bin('1 day', time, $3) AS day, count(*), avg(v), min(v), max(v) FROM"
                " (SELECT time, (instance->>'value')::float8 AS v FROM attr_history"
                " WHERE tenant = '' AND entity_id = $1 AND attr = $2 AND time >= $3"
                " AND time < $4) s GROUP BY day ORDER BY day"
            )

    def run(self, sql: str) -> int:
        if self.kind == "sqlite":
            return len(self.conn.execute(sql, self.params).fetchall())
        return len(self.loop.run_until_complete(self.conn.fetch(sql, *self.params)))

    def close(self) -> None:
        if self.kind == "sqlite":
            self.conn.close()
        else:
            self.loop.run_until_complete(self.conn.close())
            self.loop.close()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def part_temporal(args: argparse.Namespace, kind: str, stores: Stores, report: Report) -> None:
    with serving(stores, kind, history=True) as (base, where, auth):
        instances, seconds = load_series(base, auth)
        report.add(
            Row(
                f"load {instances:,} instances (temporal POST, {LOAD_CHUNK:,} per attr/request)",
                kind,
                f"{instances / seconds:,.0f} instances/s",
            )
        )
        floor = SqlFloor(kind, where, stores.pg_url)
        window = {
            "attrs": "no2",
            "timerel": "between",
            "timeAt": YEAR_START.isoformat().replace("+00:00", "Z"),
            "endTimeAt": YEAR_END.isoformat().replace("+00:00", "Z"),
        }
        aggregated = {
            **window,
            "options": "aggregatedValues",
            "aggrMethods": "avg,min,max",
            "aggrPeriodDuration": "P1D",
        }
        url = f"{base}{NGSI}/temporal/entities/{SERIES_ID}"
        res: dict[str, Any] = {
            "instances_loaded": instances,
            "load_instances_per_s": round(instances / seconds),
        }
        try:
            with httpx.Client(timeout=120, headers=auth) as http:
                for name, params, sql, expect in (
                    ("raw", window, floor.raw_sql, 35040),
                    ("aggregated per day", aggregated, floor.agg_sql, 365),
                ):

                    def get(params: dict = params) -> httpx.Response:
                        r = http.get(url, params=params)
                        assert r.status_code == 200, r.text[:300]
                        return r

                    # Check once that both sides answer what they should, and warm them up.
                    body = get().json()
                    got = body["no2"]
                    count = len(got) if name == "raw" else len(got["avg"])
                    assert count == expect, (name, count)
                    assert floor.run(sql) == expect
                    server_ms, sql_ms = [], []
                    size = 0
                    for _ in range(args.requests):
                        dt, r = timed(get)
                        server_ms.append(dt)
                        size = len(r.content)
                        sql_ms.append(timed(lambda sql=sql: floor.run(sql))[0])
                    p50, p95 = percentiles(server_ms)
                    f50, f95 = percentiles(sql_ms)
                    is_agg = name != "raw"
                    report.add(
                        Row(
                            f"temporal {name}, {expect:,} {'periods' if is_agg else 'instances'}"
                            f" ({size / 1e6:.2f} MB)",
                            kind,
                            ms(p50, p95),
                            f"SQL {ms(f50, f95)}",
                            f"{p50 / f50:.1f}x / {p95 / f95:.1f}x",
                            "p95 <= 100 ms" if is_agg else "",
                            verdict(p95 <= 100) if is_agg else "",
                        )
                    )
                    key = "aggregated" if is_agg else "raw"
                    res[key] = {
                        "p50_ms": round(p50, 2),
                        "p95_ms": round(p95, 2),
                        "sql_p50_ms": round(f50, 2),
                        "sql_p95_ms": round(f95, 2),
                        "response_bytes": size,
                    }
        finally:
            floor.close()
        report.results[f"temporal_{kind}"] = res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", type=int, default=100_000, help="upsert, get, query")
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk round")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"comma-separated: {','.join(PARTS)}"
    )
    parser.add_argument(
        "--store", choices=[*STORES, "both"], default="both", help="history, temporal"
    )
    parser.add_argument("--history-entities", type=int, default=15_000)
    parser.add_argument("--rounds", type=int, default=3, help="history: alternating rounds")
    parser.add_argument("--requests", type=int, default=30, help="temporal: requests per figure")
    parser.add_argument("--postgres", default=PG_URL, help="PostgreSQL URL (no ?schema)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    args = parser.parse_args()
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if parts - set(PARTS):
        parser.error(f"unknown parts: {', '.join(sorted(parts - set(PARTS)))}")
    kinds = list(STORES) if args.store == "both" else [args.store]
    if "postgres" in kinds and parts & {"history", "temporal"}:
        reason = postgres_unavailable(args.postgres)
        if reason:
            print(f"PostgreSQL skipped: {reason}", file=sys.stderr)
            kinds.remove("postgres")
    report = Report()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        stores = Stores(Path(tmp), args.postgres)
        try:
            if parts & {"upsert", "get", "query"}:
                part_core(args, parts, stores, report)
            for kind in kinds:
                if "history" in parts:
                    part_history(args, kind, stores, report)
                if "temporal" in parts:
                    part_temporal(args, kind, stores, report)
        finally:
            stores.cleanup()
    report.results["seconds"] = round(time.perf_counter() - began)
    print()
    print(report.table())
    print(f"\n{report.results['seconds']} s; ratio = measured / layer underneath")
    if args.json:
        args.json.write_text(json.dumps(report.results, indent=2) + "\n")


if __name__ == "__main__":
    main()
