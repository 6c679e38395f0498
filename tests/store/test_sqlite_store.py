"""The embedded store: durability settings, the geo index, atomic batches, schema version."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from cidade.ngsild.errors import ResourceNotFound
from cidade.ngsild.query.geo import parse_geoquery
from cidade.store.base import EntityQuery, WriteChain, WriteChainBroken, WriteOp
from cidade.store.sqlite import SqliteStore
from cidade.store.sqlite.store import SCHEMA_VERSION, geo_candidates_sql

D = "https://uri.etsi.org/ngsi-ld/default-context/"
LOC = "https://uri.etsi.org/ngsi-ld/location"


def expand(term: str) -> str:
    return LOC if term == "location" else D + term


def doc(n: int, lon: float, lat: float) -> dict:
    return {
        "id": f"urn:ngsi-ld:P:{n}",
        "type": [D + "P"],
        "createdAt": "2026-01-01T00:00:00.000000Z",
        "modifiedAt": "2026-01-01T00:00:00.000000Z",
        "attrs": {
            LOC: [{"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}]
        },
    }


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def store(tmp_path):
    s = SqliteStore(str(tmp_path / "s.db"))
    loop = asyncio.new_event_loop()
    loop.run_until_complete(s.open())
    yield s, loop, tmp_path / "s.db"
    loop.run_until_complete(s.close())
    loop.close()


def test_wal_and_full_sync(store):
    _, _, path = store
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_commits_are_checkpointed_off_the_writer(store):
    """The writer's own checkpoints wait for 64 MiB of WAL; a thread copies commits into the
    database file meanwhile, so the file grows shortly after a write much smaller than that."""
    s, loop, path = store
    writer = s.db._writer
    assert writer is not None
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000  # this connection's
    before = path.stat().st_size
    docs = [doc(n, -8.6 + n * 1e-4, 41.15) for n in range(3000)]
    loop.run_until_complete(s.write("t", [WriteOp(d["id"], lambda cur, d=d: d) for d in docs]))
    wal = path.with_name(path.name + "-wal")
    assert wal.stat().st_size > 1 << 20  # the write went to the WAL first
    deadline = time.monotonic() + 5
    while path.stat().st_size <= before:
        assert time.monotonic() < deadline, "the database file was never checkpointed"
        time.sleep(0.02)
    assert s.db._checkpointer is not None and s.db._checkpointer.is_alive()


async def chain_stops_at_its_first_failed_write(store) -> None:
    """Two writes of one chain handed over at once, the first failing as a whole (its op
    gives a document without types or attributes): the second is not tried, a write outside
    the chain is, and a new chain takes the second again. Shared with the PostgreSQL tests."""
    broken = "urn:ngsi-ld:P:broken"
    first_doc, free_doc = doc(1, -8.6, 41.1), doc(2, -8.6, 41.2)
    chain = WriteChain(1)
    results = await asyncio.gather(
        store.write("t", [WriteOp(broken, lambda cur: {"id": broken})], chain=chain),
        store.write("t", [WriteOp(first_doc["id"], lambda cur: first_doc)], chain=chain),
        store.write("t", [WriteOp(free_doc["id"], lambda cur: free_doc)]),
        return_exceptions=True,
    )
    assert isinstance(results[0], Exception) and not isinstance(results[0], WriteChainBroken)
    assert isinstance(results[1], WriteChainBroken)
    assert not isinstance(results[2], BaseException)
    assert await store.get_entity("t", first_doc["id"]) is None  # never tried
    assert await store.get_entity("t", free_doc["id"]) is not None
    with pytest.raises(WriteChainBroken):  # the chain stays broken
        await store.write("t", [WriteOp(first_doc["id"], lambda cur: first_doc)], chain=chain)
    again = WriteChain(2)
    await store.write("t", [WriteOp(first_doc["id"], lambda cur: first_doc)], chain=again)
    assert await store.get_entity("t", first_doc["id"]) is not None


def test_a_chain_stops_at_its_first_failed_write(store):
    s, loop, _ = store
    loop.run_until_complete(chain_stops_at_its_first_failed_write(s))


def test_geo_query_uses_the_rtree_and_visits_only_candidates(store):
    s, loop, path = store
    # 2,500 points on a grid over Porto; the query circle holds a handful of them.
    docs = [
        doc(i * 50 + j, -8.70 + i * 0.003, 41.10 + j * 0.002) for i in range(50) for j in range(50)
    ]
    loop.run_until_complete(s.write("", [WriteOp(d["id"], lambda _c, d=d: d) for d in docs]))
    geo = parse_geoquery("near;maxDistance==300", "Point", "[-8.64,41.15]", None, expand)
    query = EntityQuery(types=D + "P", geo=geo, limit=1000, count=True)
    sql, params = geo_candidates_sql("", query)
    conn = sqlite3.connect(path)
    plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "VIRTUAL TABLE INDEX" in plan and "SCAN g" not in plan, plan
    candidates = conn.execute(sql, params).fetchall()
    assert 0 < len(candidates) < 60, len(candidates)  # a box around the circle, not 2,500
    result = loop.run_until_complete(s.query("", query))
    assert 0 < result.count <= len(candidates)
    for e in result.entities:
        assert geo.entity_matches(e)
    outside = [d for d in docs if d["id"] not in {e["id"] for e in result.entities}]
    assert not [d for d in outside if geo.entity_matches(d)]


def test_a_failing_op_changes_nothing_and_others_commit(store):
    s, loop, _ = store

    def refuse(current):
        raise ResourceNotFound("no")

    results = loop.run_until_complete(
        s.write(
            "",
            [
                WriteOp("urn:a:1", lambda _c: doc(1, 0, 0) | {"id": "urn:a:1"}),
                WriteOp("urn:a:2", refuse),
            ],
        )
    )
    assert isinstance(results[1], ResourceNotFound)
    assert loop.run_until_complete(s.get_entity("", "urn:a:1")) is not None
    assert loop.run_until_complete(s.get_entity("", "urn:a:2")) is None


def test_discovery_counters_follow_updates_and_deletes(store):
    s, loop, _ = store
    loop.run_until_complete(
        s.write("", [WriteOp("urn:a:1", lambda _c: doc(1, 0, 0) | {"id": "urn:a:1"})])
    )
    assert [a["count"] for a in loop.run_until_complete(s.attributes(""))] == [1]
    loop.run_until_complete(s.write("", [WriteOp("urn:a:1", lambda _c: None)]))
    assert loop.run_until_complete(s.attributes("")) == []
    assert loop.run_until_complete(s.entity_types("")) == []


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(SystemExit, match="newer"):
        run(SqliteStore(str(path)).open())


def test_a_write_outside_a_chain_does_not_wait_for_the_chained_ones_queued_beside_it(store):
    """While the writer is busy, a device batch (chained) and an operator's write (not) are
    queued: the operator's write is committed on its own first, and acknowledged before the
    batch; the chained writes keep their order."""
    import threading

    s, loop, _ = store
    order: list[str] = []
    busy, release = threading.Event(), threading.Event()
    chain = WriteChain(1)

    def step(name: str, wait: bool = False):
        def fn(conn: sqlite3.Connection) -> str:
            if wait:
                busy.set()
                release.wait(10)
            order.append(name)
            return name

        return fn

    async def main() -> list[str]:
        done: list[str] = []

        async def write(name: str, chained: bool, wait: bool = False) -> None:
            await s.db.write(step(name, wait), chain=chain if chained else None)
            done.append(name)

        first = asyncio.ensure_future(write("batch 1", True, wait=True))
        await asyncio.to_thread(busy.wait, 10)  # the writer holds batch 1
        later = [
            asyncio.ensure_future(write("batch 2", True)),
            asyncio.ensure_future(write("operator", False)),
            asyncio.ensure_future(write("batch 3", True)),
        ]
        await asyncio.sleep(0.05)  # all three queued behind batch 1
        release.set()
        await asyncio.gather(first, *later)
        return done

    done = loop.run_until_complete(main())
    assert order == ["batch 1", "operator", "batch 2", "batch 3"]
    assert done.index("operator") < done.index("batch 2")
