"""The production store: PostgreSQL 15 with PostGIS 3, through asyncpg."""

from cidade.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
