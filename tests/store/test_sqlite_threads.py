"""Nothing of a SQLite connection leaves the thread that owns it (store/sqlite/database.py).

A cursor finalised on the event loop while the writer thread ran its (cached, shared)
statement reset that statement under the writer: "bad parameter or other API misuse", and
the write was lost (issue 14: audit rows under concurrent requests)."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from cidade.ngsild.errors import BadRequestData
from cidade.store.base import AuditQuery, WriteOp
from tests.conftest import running_store

AUDIT = (
    "INSERT INTO audit_log(at, tenant, actor, event, outcome, target, detail)"
    " VALUES ('2026-01-01T00:00:00Z', '', 'test', 'auth.failed', 'denied', '', NULL)"
)


@pytest.fixture
def sqlite_store(tmp_path):
    with running_store("sqlite", tmp_path) as (store, loop):
        yield store, loop


def test_a_function_that_returns_part_of_a_connection_is_refused(sqlite_store):
    store, loop = sqlite_store
    db = store.db

    async def go() -> None:
        for returns in (
            lambda c: c.execute(AUDIT),  # the cursor itself
            lambda c: c.executemany(AUDIT, [()]),
            lambda c: c,  # the connection
        ):
            with pytest.raises(TypeError, match="plain data"):
                await db.write(returns)
        for returns in (lambda c: c.execute("SELECT 1"), lambda c: c):
            with pytest.raises(TypeError, match="plain data"):
                await db.read(returns)
        # The refused writes were rolled back: no row of theirs.
        count = await db.read(lambda c: c.execute("SELECT count(*) FROM audit_log").fetchone()[0])
        assert count == 0

    loop.run_until_complete(go())


def test_cursors_a_function_made_are_closed_before_its_result_leaves(sqlite_store):
    """However deep in a result (or in an exception's traceback) a cursor hides, it arrives
    closed: it holds no statement, whichever thread finalises it."""
    store, loop = sqlite_store
    db = store.db

    def hides_a_cursor(c: sqlite3.Connection) -> dict:
        return {"rows": [c.execute("SELECT 1 UNION SELECT 2")]}

    def fails_holding_a_cursor(c: sqlite3.Connection) -> None:
        cursor = c.execute("SELECT 1 UNION SELECT 2")  # noqa: F841 (kept by the traceback)
        raise BadRequestData("refused")

    async def go() -> None:
        for run in (db.write, db.read):
            hidden = (await run(hides_a_cursor))["rows"][0]
            with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
                hidden.fetchall()
            with pytest.raises(BadRequestData) as refused:
                await run(fails_holding_a_cursor)
            frame = refused.value.__traceback__
            while frame.tb_next is not None:
                frame = frame.tb_next
            with pytest.raises(sqlite3.ProgrammingError, match="closed cursor"):
                frame.tb_frame.f_locals["cursor"].fetchall()

    loop.run_until_complete(go())


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_many_concurrent_writes_refused_and_accepted_lose_no_audit_row(kind, tmp_path):
    """Thousands of concurrent audit appends beside refused and accepted entity writes: every
    append is written (on SQLite, before the fix, a few in 10,000 failed)."""
    events = 30_000 if kind == "sqlite" else 3_000  # the race was SQLite's; PostgreSQL alike
    with running_store(kind, tmp_path) as (store, loop):

        def refuse(current):
            raise BadRequestData("refused")

        def accept(current):
            return {
                "id": "urn:ngsi-ld:T:1",
                "type": ["https://example.org/T"],
                "createdAt": "2026-01-01T00:00:00.000000Z",
                "modifiedAt": "2026-01-01T00:00:00.000000Z",
                "attrs": {},
            }

        async def go() -> list:
            event = {
                "at": "2026-01-01T00:00:00Z",
                "tenant": "",
                "actor": "test",
                "event": "auth.failed",
                "outcome": "denied",
                "target": "GET /",
                "detail": {"reason": "unknown or revoked API key"},
            }
            calls = []
            for n in range(events):
                calls.append(store.append_audit([event]))
                if n % 300 == 0:
                    op = WriteOp("urn:ngsi-ld:T:1", refuse if n % 600 == 0 else accept)
                    calls.append(store.write("", [op]))
            return await asyncio.gather(*calls, return_exceptions=True)

        results = loop.run_until_complete(go())
        failures = [r for r in results if isinstance(r, Exception)]
        assert failures == [], {repr(f) for f in failures}
        written = loop.run_until_complete(
            store.audit_events(AuditQuery(event="auth.failed", limit=events + 1))
        )
        assert len(written) == events
        outcomes = [r[0] for r in results if isinstance(r, list)]
        assert sum(isinstance(o, BadRequestData) for o in outcomes) == events // 600
        assert sum(isinstance(o, dict) for o in outcomes) == events // 300 - events // 600
