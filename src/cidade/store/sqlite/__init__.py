"""The embedded store: SQLite in WAL mode, R*Tree for geo-queries."""

from cidade.store.sqlite.store import SqliteStore

__all__ = ["SqliteStore"]
