"""Occurrences at city scale: create rate, duplicate lookup and filtered list, on both stores.

    .venv/bin/python bench/occurrences.py [--occurrences 100000] [--store both] [--json out.json]

Each store (a fresh SQLite file; a fresh PostgreSQL schema, dropped at the end) is loaded with
``--occurrences`` realistic occurrences straight into its tables (the rows, points, departments
and history events the service writes, built as it builds them): spread over Porto and the
last 90 days, of every category, most of the older ones closed. Then, in process, through the
OccurrenceService and the store as the API calls them, each next to the store's own floor for
the same work, measured in the same run on the same store and connections:

create      ``service.report`` of a citizen's report (category, description, point, e-mail)
            from ``--concurrency`` tasks at once, as a busy API would, for ``--creates``
            reports: reports/s, and this process's CPU per report. It includes what the app
            does with each: the duplicate lookup, and the occurrence's hub entity written
            after it (the service as app.py wires it; occurrences/entities.py): a round
            ends when the last report's entity is written. Floor: the
            same rows (occurrence, point, department, event) inserted with raw SQL from as
            many tasks, each in a write of its own (the SQLite writer's group commit; one
            PostgreSQL statement). Aim: >= 1,000/s.
duplicates  ``service.duplicates`` at a random point of the city for a random category (open
            occurrences of its group within 250 m and 7 days), one caller, ``--samples``
            times: p50 / p95 ms. Floor: the store's SQL of that lookup run raw. Aim: p95 <= 10 ms.
list        ``service.list`` of one department's open occurrences, newest 50 (the room's
            queue), for a random department: p50 / p95 ms. Floor: its SQL run raw.

Cidade and floor alternate sample by sample (rate runs: round by round), so a noisy stretch
of a shared machine hits both. Ratios are "measured / floor": a fraction of the floor for
rates, how many times the floor for latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from cidade.app import build_app
from cidade.auth.roles import ROLES
from cidade.config import Settings
from cidade.ngsild import timefmt
from cidade.occurrences.configuration import default_config
from cidade.occurrences.model import STATUSES
from cidade.occurrences.service import Actor, OccurrenceService
from cidade.occurrences.service import Report as Reported
from cidade.store.occurrences import OccurrenceQuery, near_box, occurrence_columns
from cidade.store.postgres.occurrences import COLUMN_TYPES
from run import (
    LAT0,
    LAT1,
    LON0,
    LON1,
    PG_URL,
    Report,
    Row,
    drop_schema,
    ms,
    percentiles,
    postgres_unavailable,
    rate,
    verdict,
)

DAY = 86400.0
CONFIG = default_config()
CATEGORIES = [c for c in CONFIG.categories.values() if c.public]
DEPARTMENTS = sorted(CONFIG.departments)
CITIZEN = Actor("anonymous", ROLES["citizen"])
TENANT = ""
_SOME = "2026-01-01T00:00:00.000000Z"
# the columns a write fills, in occurrence_columns' order
COLUMNS = [
    k
    for k in occurrence_columns(
        {"category": "", "status": "", "created_at": _SOME, "updated_at": _SOME}
    )
    if k != "departments"
]
WORDS = [
    "hole",
    "deep",
    "road",
    "near",
    "the",
    "bus",
    "stop",
    "cars",
    "swerve",
    "around",
    "it",
    "every",
    "morning",
    "since",
    "last",
    "week",
    "container",
    "full",
    "bags",
    "on",
    "the",
    "pavement",
    "smell",
    "light",
    "off",
    "whole",
    "street",
    "dark",
    "at",
    "night",
]


def description(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40))).capitalize() + "."


def point(rng: random.Random) -> tuple[float, float]:
    return round(rng.uniform(LAT0, LAT1), 6), round(rng.uniform(LON0, LON1), 6)


# -- the stored city: rows as the service writes them ----------------------------------------


def stored(number: int, rng: random.Random, now: float) -> tuple[dict, dict, list[dict]]:
    """One occurrence as the service would have left it: (doc, private, history events)."""
    category = rng.choice(CATEGORIES)
    priority = category.priority
    created = now - rng.uniform(0, 90) * DAY
    age = now - created
    # Recent ones are mostly still open; older ones mostly closed.
    still_open = rng.random() < (0.6 if age < 7 * DAY else 0.12)
    status = rng.choice(
        ["new", "accepted", "assigned", "in_progress"]
        if still_open
        else ["resolved", "closed", "closed", "closed", "rejected", "duplicate"]
    )
    response_s, resolution_s = category.deadlines[priority]
    t = timefmt.from_epoch
    deadlines: dict[str, dict[str, str]] = {
        "response": {"due": t(created + response_s)},
        "resolution": {"due": t(created + resolution_s)},
    }
    updated = created
    if status != "new":
        updated = created + min(age, rng.expovariate(1 / (response_s * 0.8)))
        deadlines["response"]["met"] = t(updated)
    if not still_open:
        updated = min(now, updated + rng.expovariate(1 / (resolution_s * 0.7)))
        deadlines["resolution"]["met"] = t(updated)
    departments = [category.department]
    if rng.random() < 0.1:
        departments = sorted({category.department, rng.choice(DEPARTMENTS)})
    lat, lon = point(rng)
    doc = {
        "number": number,
        "token": secrets.token_urlsafe(16),
        "category": category.code,
        "category_name": category.name,
        "group": category.group,
        "departments": departments,
        "title": category.name,
        "description": description(rng),
        "address": "",
        "location": {"lat": lat, "lon": lon},
        "area": "",
        "source": rng.choice(["web", "web", "open311", "phone", "operator"]),
        "status": status,
        "open": STATUSES[status].open,
        "priority": priority,
        "created_at": t(created),
        "updated_at": t(updated),
        "observed_at": t(created),
        "deadlines": deadlines,
        "tasks": [
            {"department": d, "status": "done" if not still_open else "assigned"}
            for d in departments
        ]
        if status not in ("new", "accepted", "rejected", "duplicate")
        else [],
        "duplicate_of": None,
        "duplicates": [],
        "entities": [],
        "attributes": {},
        "media_url": "",
        "photos": [],
        "updates": [],
        "rule": None,
        "agency_ref": "",
        "anonymous": False,
        "followers": 0,
    }
    private = {"reporter": {"email": f"resident{number}@example.org"}, "followers": []}
    events = [{"at": t(created), "actor": "anonymous", "kind": "created", "public": True}]
    if status != "new":
        events.append({"at": t(updated), "actor": "account:op", "kind": status, "public": True})
    return doc, private, events


def bulk_rows(docs: list[tuple[int, dict, dict, list[dict]]]) -> dict[str, list[tuple]]:
    """The rows of every table for a batch of occurrences."""
    out: dict[str, list[tuple]] = {"occurrences": [], "geo": [], "departments": [], "events": []}
    for number, doc, private, events in docs:
        cols = occurrence_columns(doc)
        out["occurrences"].append(
            (
                number,
                TENANT,
                1,
                orjson.dumps(doc).decode(),
                orjson.dumps(private).decode(),
                *(cols[c] for c in COLUMNS),
            )
        )
        out["geo"].append((number, cols["lon"], cols["lon"], cols["lat"], cols["lat"]))
        out["departments"] += [(number, d) for d in cols["departments"]]
        out["events"] += [
            (TENANT, number, timefmt.to_epoch(e["at"]), e["kind"], True, orjson.dumps(e).decode())
            for e in events
        ]
    return out


async def load_sqlite(store: Any, n: int, rng: random.Random, now: float) -> None:
    insert = (
        f"INSERT INTO occurrences(number, tenant, version, doc, private, {', '.join(COLUMNS)})"
        f" VALUES ({', '.join('?' * (5 + len(COLUMNS)))})"
    )

    def write(rows: dict[str, list[tuple]]) -> Callable[[sqlite3.Connection], int]:
        def run(conn: sqlite3.Connection) -> int:
            conn.executemany(insert, rows["occurrences"])
            conn.executemany("INSERT INTO occurrence_geo VALUES (?, ?, ?, ?, ?)", rows["geo"])
            conn.executemany(
                "INSERT INTO occurrence_departments(number, department) VALUES (?, ?)",
                rows["departments"],
            )
            conn.executemany(
                "INSERT INTO occurrence_events(tenant, number, at, kind, public, doc)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows["events"],
            )
            return len(rows["occurrences"])

        return run

    for start in range(1, n + 1, 10_000):
        batch = [(i, *stored(i, rng, now)) for i in range(start, min(n, start + 9_999) + 1)]
        await store.db.write(write(bulk_rows(batch)))


def arrays_of(rows: list[tuple]) -> list[list]:
    """Rows as one list per column (for unnest)."""
    return [list(column) for column in zip(*rows, strict=True)]


async def load_postgres(store: Any, n: int, rng: random.Random, now: float) -> None:
    # One statement per table and batch, the rows as arrays (unnest), the point made in SQL.
    names = ["number", "tenant", "version", "doc", "private", *COLUMNS]
    types = [
        "int8",
        "text",
        "int4",
        "text",
        "text",
        *(COLUMN_TYPES.get(c, "text") for c in COLUMNS),
    ]
    arrays = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types))
    selected = ", ".join(f"u.{c}::jsonb" if c in ("doc", "private") else f"u.{c}" for c in names)
    insert = (
        f"INSERT INTO occurrences({', '.join(names)}, geom) SELECT {selected},"
        f" ST_SetSRID(ST_MakePoint(u.lon, u.lat), 4326) FROM unnest({arrays})"
        f" AS u({', '.join(names)})"
    )
    async with store._pool.acquire() as conn:
        for start in range(1, n + 1, 10_000):
            batch = [(i, *stored(i, rng, now)) for i in range(start, min(n, start + 9_999) + 1)]
            rows = bulk_rows(batch)
            async with conn.transaction():
                await conn.execute(insert, *arrays_of(rows["occurrences"]))
                await conn.execute(
                    "INSERT INTO occurrence_departments(number, department)"
                    " SELECT * FROM unnest($1::int8[], $2::text[])",
                    *arrays_of(rows["departments"]),
                )
                await conn.execute(
                    "INSERT INTO occurrence_events(tenant, number, at, kind, public, doc)"
                    " SELECT t, n, a, k, p, d::jsonb FROM unnest($1::text[], $2::int8[],"
                    " $3::float8[], $4::text[], $5::bool[], $6::text[]) AS u(t, n, a, k, p, d)",
                    *arrays_of(rows["events"]),
                )
        await conn.execute("SELECT setval(pg_get_serial_sequence('occurrences', 'number'), $1)", n)
        await conn.execute("ANALYZE occurrences")
        await conn.execute("ANALYZE occurrence_departments")


# -- the floors: the store's own SQL, run raw --------------------------------------------------


class Floor:
    """The same work as Cidade's, in the store's own SQL on its own connections."""

    def __init__(self, kind: str, store: Any) -> None:
        self.kind = kind
        self.store = store

    async def create(self, doc: dict, private: dict, events: list[dict]) -> None:
        """The rows of one new occurrence, its number given by the store as for Cidade's."""
        rows = bulk_rows([(0, doc, private, events)])
        occurrence, geo = rows["occurrences"][0][1:], rows["geo"][0][1:]
        departments = [d[1:] for d in rows["departments"]]
        events_ = [e[2:] for e in rows["events"]]
        if self.kind == "sqlite":

            def run(conn: sqlite3.Connection) -> None:
                number = conn.execute(
                    f"INSERT INTO occurrences(tenant, version, doc, private, {', '.join(COLUMNS)})"
                    f" VALUES ({', '.join('?' * (4 + len(COLUMNS)))})",
                    occurrence,
                ).lastrowid
                conn.execute("INSERT INTO occurrence_geo VALUES (?, ?, ?, ?, ?)", (number, *geo))
                conn.executemany(
                    "INSERT INTO occurrence_departments(number, department) VALUES (?, ?)",
                    [(number, *d) for d in departments],
                )
                conn.executemany(
                    "INSERT INTO occurrence_events(tenant, number, at, kind, public, doc)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [(TENANT, number, *e) for e in events_],
                )

            await self.store.db.write(run)
            return
        # One statement, its number from the sequence: the least round trips there can be.
        types = [COLUMN_TYPES.get(c, "text") for c in COLUMNS]
        values = ", ".join(f"${5 + i}::{t}" for i, t in enumerate(types))
        lon, lat = (f"${5 + COLUMNS.index(c)}::float8" for c in ("lon", "lat"))
        k = 5 + len(COLUMNS)
        await self.store._pool.execute(
            "WITH o AS (INSERT INTO occurrences(number, tenant, version, doc, private, geom,"
            f" {', '.join(COLUMNS)}) VALUES (nextval(pg_get_serial_sequence('occurrences',"
            f" 'number')), $1, $2, $3::text::jsonb, $4::text::jsonb,"
            f" ST_SetSRID(ST_MakePoint({lon}, {lat}), 4326), {values}) RETURNING number),"
            " d AS (INSERT INTO occurrence_departments(number, department)"
            f" SELECT o.number, unnest(${k}::text[]) FROM o)"
            " INSERT INTO occurrence_events(tenant, number, at, kind, public, doc)"
            " SELECT $1, o.number, e.at, e.kind, e.public, e.doc::jsonb FROM o,"
            f" unnest(${k + 1}::float8[], ${k + 2}::text[], ${k + 3}::bool[], ${k + 4}::text[])"
            " AS e(at, kind, public, doc)",
            *occurrence,
            [d[0] for d in departments],
            *arrays_of(events_),
        )

    async def duplicates(self, group: str, lat: float, lon: float, since: float) -> int:
        """The lookup's SQL as the store runs it (store/*/occurrences.py query_occurrences)."""
        box = near_box(lat, lon, 250.0)
        if self.kind == "sqlite":
            sql = (
                "SELECT o.number, o.version, o.doc, o.private, o.lat, o.lon FROM occurrences o"
                " INDEXED BY occurrences_open_band"
                " WHERE o.tenant = ? AND o.grp IN (?) AND o.open = 1"
                " AND o.created_at >= ? AND o.lat BETWEEN ? AND ? AND o.lon BETWEEN ? AND ?"
                " ORDER BY o.created_at DESC, o.number DESC"
            )
            params = (TENANT, group, since, box[1], box[3], box[0], box[2])
            return await self.store.db.read(lambda c: len(c.execute(sql, params).fetchall()))
        rows = await self.store._pool.fetch(
            "SELECT number, version, doc, private, lat, lon FROM occurrences WHERE tenant = $1"
            " AND grp = ANY($2::text[]) AND open AND created_at >= $3"
            " AND geom && ST_MakeEnvelope($4, $5, $6, $7, 4326)"
            " AND lon BETWEEN $8 AND $9 AND lat BETWEEN $10 AND $11"
            " ORDER BY created_at DESC, number DESC",
            TENANT,
            [group],
            since,
            *box,
            box[0],
            box[2],
            box[1],
            box[3],
        )
        return len(rows)

    async def queue(self, department: str) -> int:
        """The list's SQL as the store runs it, newest 50."""
        if self.kind == "sqlite":
            sql = (
                "SELECT o.number, o.version, o.doc, o.private, o.lat, o.lon FROM occurrences o"
                " WHERE o.tenant = ? AND o.version > 0 AND o.number IN (SELECT number FROM"
                " occurrence_departments WHERE department IN (?)) AND o.open = 1"
                " ORDER BY o.created_at DESC, o.number DESC LIMIT ? OFFSET ?"
            )
            params = (TENANT, department, 50, 0)
            return await self.store.db.read(lambda c: len(c.execute(sql, params).fetchall()))
        rows = await self.store._pool.fetch(
            "SELECT number, version, doc, private, lat, lon FROM occurrences WHERE tenant = $1"
            " AND number IN (SELECT number FROM occurrence_departments WHERE department ="
            " ANY($2::text[])) AND open ORDER BY created_at DESC, number DESC"
            " LIMIT $3 OFFSET $4",
            TENANT,
            [department],
            50,
            0,
        )
        return len(rows)


# -- measuring -----------------------------------------------------------------------------------


async def concurrently(count: int, tasks: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """``count`` calls of ``one(i)`` from ``tasks`` tasks at once: calls per second."""
    left = iter(range(count))

    async def worker() -> None:
        for i in left:
            await one(i)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return count / (time.perf_counter() - began)


async def timed(call: Awaitable[Any]) -> tuple[float, Any]:
    """(milliseconds, result) of one call."""
    began = time.perf_counter()
    result = await call
    return (time.perf_counter() - began) * 1000, result


async def bench_store(kind: str, store: Any, args: argparse.Namespace, report: Report) -> dict:
    rng = random.Random(90210)
    # The service as the app wires it, with every listener of its writes (the occurrence's
    # hub entity is written after each report).
    app = build_app(Settings(store=args.postgres if kind == "postgres" else "sqlite://"), store)
    service: OccurrenceService = app.state.occurrences
    mirror = app.state.occurrence_mirror
    floor = Floor(kind, store)
    now = time.time()
    began = time.perf_counter()
    load = load_sqlite if kind == "sqlite" else load_postgres
    await load(store, args.occurrences, rng, now)
    loaded = time.perf_counter() - began
    print(f"  {kind:8} loaded {args.occurrences:,} occurrences in {loaded:.1f} s", flush=True)
    res: dict[str, Any] = {"occurrences": args.occurrences, "load_seconds": round(loaded, 1)}

    # create: rounds alternate Cidade and the floor
    def citizen_report(_: int) -> Reported:
        lat, lon = point(rng)
        category = rng.choice(CATEGORIES)
        return Reported(
            category=category.code,
            # the questions with choices answered, as an app asks them
            attributes={a.code: a.values[0][0] for a in category.attributes if a.values},
            description=description(rng),
            lat=lat,
            lon=lon,
            email="resident@example.org",
            name="A resident",
        )

    async def floor_one(_: int) -> None:
        await floor.create(*stored(0, rng, time.time()))

    # The same service without the listener that writes the hub entity: what the occurrence
    # alone costs (its store writes, the duplicate lookup, the checks).
    alone = OccurrenceService(store, service.base_config)
    variants = {"as the app wires it": service, "without its hub entity": alone}
    rates: dict[str, list[float]] = {name: [] for name in [*variants, "floor"]}
    cpu_ms: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, args.creates // args.rounds)
    await concurrently(
        200, args.concurrency, lambda i: service.report(TENANT, CITIZEN, citizen_report(i))
    )
    await mirror.idle()
    for _ in range(args.rounds):
        for name, reporting in variants.items():
            reports = [citizen_report(i) for i in range(per_round)]
            cpu = time.process_time()
            began = time.perf_counter()
            await concurrently(
                per_round,
                args.concurrency,
                lambda i, s=reporting, r=reports: s.report(TENANT, CITIZEN, r[i]),
            )
            # The hub entities are written after the reports return: the round ends when the
            # last of them is (app.py's mirror, occurrences/entities.py).
            await mirror.idle()
            rates[name].append(per_round / (time.perf_counter() - began))
            # this process's CPU (all its threads; PostgreSQL's own is not in it)
            cpu_ms[name].append((time.process_time() - cpu) / per_round * 1000)
        rates["floor"].append(await concurrently(per_round, args.concurrency, floor_one))
    raw = statistics.median(rates["floor"])
    res["create"] = {"floor_per_s": round(raw)}
    for name in variants:
        created = statistics.median(rates[name])
        ratio = statistics.median(c / f for c, f in zip(rates[name], rates["floor"], strict=True))
        cpu = statistics.median(cpu_ms[name])
        report.add(
            Row(
                f"create, {args.concurrency} tasks: service.report {name}",
                kind,
                f"{rate(created)} ({cpu:.2f} ms CPU each)",
                f"raw SQL inserts {rate(raw)}",
                f"{ratio:.3f}",
                ">= 1,000/s",
                verdict(created >= 1000),
            )
        )
        res["create"][name] = {
            "per_s": round(created),
            "ratio": round(ratio, 3),
            "process_cpu_ms_per_report": round(cpu, 3),
        }

    # duplicates: one caller, Cidade and the floor alternate sample by sample
    found, cidade_ms, floor_ms = [], [], []
    for _ in range(args.samples):
        category = rng.choice(CATEGORIES)
        lat, lon = point(rng)
        since = time.time() - category.duplicate_window
        dt, duplicates = await timed(service.duplicates(TENANT, category, lat, lon))
        cidade_ms.append(dt)
        found.append(len(duplicates))
        floor_ms.append((await timed(floor.duplicates(category.group, lat, lon, since)))[0])
    p50, p95 = percentiles(cidade_ms)
    f50, f95 = percentiles(floor_ms)
    report.add(
        Row(
            f"duplicate lookup (250 m, 7 days; median {statistics.median(found):.0f} found)",
            kind,
            ms(p50, p95),
            f"raw SQL {ms(f50, f95)}",
            f"{p50 / f50:.1f}x / {p95 / f95:.1f}x",
            "p95 <= 10 ms",
            verdict(p95 <= 10),
        )
    )
    res["duplicates"] = {
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "floor_p50_ms": round(f50, 2),
        "floor_p95_ms": round(f95, 2),
    }

    # the list: a department's open occurrences, newest 50
    cidade_ms, floor_ms = [], []
    for _ in range(args.samples):
        department = rng.choice(DEPARTMENTS)
        query = OccurrenceQuery(open=True, departments=[department], limit=50)
        cidade_ms.append((await timed(service.list(TENANT, query)))[0])
        floor_ms.append((await timed(floor.queue(department)))[0])
    p50, p95 = percentiles(cidade_ms)
    f50, f95 = percentiles(floor_ms)
    report.add(
        Row(
            "list: a department's open occurrences, newest 50",
            kind,
            ms(p50, p95),
            f"raw SQL {ms(f50, f95)}",
            f"{p50 / f50:.1f}x / {p95 / f95:.1f}x",
        )
    )
    res["list"] = {
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "floor_p50_ms": round(f50, 2),
        "floor_p95_ms": round(f95, 2),
    }
    return res


async def run_store(kind: str, folder: Path, args: argparse.Namespace, report: Report) -> dict:
    schema = None
    if kind == "sqlite":
        from cidade.store.sqlite import SqliteStore

        store: Any = SqliteStore(str(folder / "occurrences.db"))
    else:
        from cidade.store.postgres import PostgresStore

        schema = f"bench_occ_{uuid.uuid4().hex[:10]}"
        store = PostgresStore(f"{args.postgres}?schema={schema}")
    await store.open()
    try:
        return await bench_store(kind, store, args, report)
    finally:
        await store.close()
        if schema:
            await drop_schema(args.postgres, schema)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occurrences", type=int, default=100_000)
    parser.add_argument("--creates", type=int, default=4_500, help="reports per store and variant")
    parser.add_argument("--rounds", type=int, default=3, help="create: alternating rounds")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--samples", type=int, default=400, help="lookups and lists")
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres", default=PG_URL, help="PostgreSQL URL (no ?schema)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file as JSON")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    if "postgres" in kinds:
        reason = postgres_unavailable(args.postgres)
        if reason:
            print(f"PostgreSQL skipped: {reason}", file=sys.stderr)
            kinds.remove("postgres")
    report = Report()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            report.results[kind] = asyncio.run(run_store(kind, Path(tmp), args, report))
    report.results["seconds"] = round(time.perf_counter() - began)
    print()
    print(report.table())
    print(f"\n{report.results['seconds']} s; ratio = measured / floor (the store's SQL, raw)")
    if args.json:
        args.json.write_text(json.dumps(report.results, indent=2) + "\n")


if __name__ == "__main__":
    main()
