"""Versioned schema migrations: NNNN_name.sql files applied in order, once, under a lock."""

from __future__ import annotations

from importlib import resources

import asyncpg

# Any constant: every Cidade process migrating the same database takes this lock, so two workers
# starting together never apply a migration twice.
MIGRATION_LOCK = 0x43494441  # "CIDA"


def available() -> list[tuple[int, str, str]]:
    folder = resources.files("cidade.store.postgres").joinpath("migrations")
    found = []
    for item in folder.iterdir():
        name = item.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), name, item.read_text()))
    return sorted(found)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration this database lacks; return the names applied."""
    applied_now = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INT PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        newest = max((v for v, _, _ in available()), default=0)
        if done and max(done) > newest:
            raise SystemExit(
                f"this database has schema version {max(done)}, newer than this Cidade "
                f"({newest}): upgrade Cidade"
            )
        for version, name, sql in available():
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations(version, name) VALUES ($1, $2)", version, name
            )
            applied_now.append(name)
    return applied_now
