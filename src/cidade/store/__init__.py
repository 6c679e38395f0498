"""Storage behind one interface: an embedded SQLite store and (next) a PostgreSQL one."""

from cidade.store.base import EntityQuery, Store, WriteOp, open_store

__all__ = ["EntityQuery", "Store", "WriteOp", "open_store"]
