"""The PostgreSQL store: migrations, the PostGIS index, locking across concurrent writers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from cidade.ngsild.query.geo import parse_geoquery
from cidade.store.base import EntityQuery, WriteOp
from cidade.store.postgres import PostgresStore
from cidade.store.postgres.migrations import available
from tests.conftest import PG_URL, drop_schema, postgres_unavailable, service_missing
from tests.store.test_sqlite_store import D, chain_stops_at_its_first_failed_write, doc, expand


@pytest.fixture
def pg() -> Iterator[tuple[PostgresStore, asyncio.AbstractEventLoop, str]]:
    reason = postgres_unavailable()
    if reason:
        service_missing(reason)
    schema = f"s_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(f"{PG_URL}?schema={schema}")
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.open())
    yield store, loop, schema
    loop.run_until_complete(store.close())
    loop.close()
    drop_schema(schema)


def test_migrations_are_recorded_and_idempotent(pg):
    _store, loop, schema = pg

    async def check() -> list[int]:
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
        try:
            return [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")]
        finally:
            await conn.close()

    assert loop.run_until_complete(check()) == [v for v, _, _ in available()]
    again = PostgresStore(f"{PG_URL}?schema={schema}")
    loop.run_until_complete(again.open())  # nothing left to apply, no error
    loop.run_until_complete(again.close())
    assert loop.run_until_complete(check()) == [v for v, _, _ in available()]


def test_a_chain_stops_at_its_first_failed_write(pg):
    store, loop, _ = pg
    loop.run_until_complete(chain_stops_at_its_first_failed_write(store))


def test_geo_query_uses_gist_and_is_exact(pg):
    store, loop, schema = pg
    docs = [
        doc(i * 40 + j, -8.70 + i * 0.003, 41.10 + j * 0.002) for i in range(40) for j in range(40)
    ]
    loop.run_until_complete(store.write("", [WriteOp(d["id"], lambda _c, d=d: d) for d in docs]))
    geo = parse_geoquery("near;maxDistance==300", "Point", "[-8.64,41.15]", None, expand)
    result = loop.run_until_complete(
        store.query("", EntityQuery(types=D + "P", geo=geo, limit=1000, count=True))
    )
    assert result.count == len(result.entities) > 0
    expected = {d["id"] for d in docs if geo.entity_matches(d)}
    assert {e["id"] for e in result.entities} == expected

    async def plan() -> str:
        conn = await asyncpg.connect(PG_URL, server_settings={"search_path": f"{schema}, public"})
        try:
            await conn.execute("ANALYZE")
            await conn.execute("SET enable_seqscan = off")
            rows = await conn.fetch(
                "EXPLAIN SELECT rid FROM geo_rows g WHERE ST_DWithin(g.geom::geography,"
                " ST_SetSRID(ST_MakePoint(-8.64, 41.15), 4326)::geography, 300)"
            )
            return "\n".join(r[0] for r in rows)
        finally:
            await conn.close()

    assert "geo_rows_geog" in loop.run_until_complete(plan())


def test_concurrent_creates_of_one_id_give_one_entity(pg):
    store, loop, _ = pg
    from cidade.ngsild.errors import AlreadyExists

    def create(current):
        if current is not None:
            raise AlreadyExists("exists")
        return doc(1, 0, 0) | {"id": "urn:x:same"}

    async def race() -> list:
        return await asyncio.gather(
            *[store.write("", [WriteOp("urn:x:same", create)]) for _ in range(8)]
        )

    outcomes = [r[0] for r in loop.run_until_complete(race())]
    assert sum(1 for o in outcomes if isinstance(o, dict)) == 1
    assert sum(1 for o in outcomes if isinstance(o, AlreadyExists)) == 7


def test_a_retry_takes_the_lane_before_its_outbox_item(pg):
    """Every transaction of the outbox takes the lane's row before its items' (settle, a
    subscription's deletion). defer_lane took the item first: with a deletion holding the lane
    and waiting for the item, PostgreSQL found a deadlock (a 500 for DELETE /csourceSubscriptions
    in a conformance run). Here the lane is held: defer_lane must wait for it holding nothing,
    so the item stays free."""
    store, loop, schema = pg
    lane = "http://receiver.example/notify"

    async def scenario() -> None:
        await store.enqueue("t", [(lane, "urn:ngsi-ld:Subscription:1", b"{}")])
        assert await store.claim_lanes("worker", 1.0, 60.0) == [lane]
        [item] = await store.lane_items(lane, 10)
        holder = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
        other = await asyncpg.connect(PG_URL, server_settings={"search_path": schema})
        try:
            await holder.execute("BEGIN")
            await holder.execute("SELECT 1 FROM delivery_lanes WHERE lane = $1 FOR UPDATE", lane)
            holder_pid = await holder.fetchval("SELECT pg_backend_pid()")
            deferring = asyncio.ensure_future(
                store.defer_lane(lane, "worker", item, "2026-01-01T00:00:00Z", 2.0)
            )
            # Until defer_lane waits for a lock the holder has (whatever it holds by then).
            for _ in range(500):
                blocked = await other.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
                    holder_pid,
                )
                if blocked:
                    break
                await asyncio.sleep(0.01)
            assert blocked, "defer_lane never waited for the lane"
            await other.execute("BEGIN")
            # Raises LockNotAvailableError when defer_lane took the item before the lane.
            await other.execute("SELECT 1 FROM outbox WHERE seq = $1 FOR UPDATE NOWAIT", item.seq)
            await other.execute("ROLLBACK")
            await holder.execute("ROLLBACK")
            await deferring
        finally:
            await holder.close()
            await other.close()
        [again] = await store.lane_items(lane, 10)
        assert again.attempts == item.attempts + 1

    loop.run_until_complete(scenario())
