"""Storage behind one interface: an embedded SQLite store and (next) a PostgreSQL one."""

from cidade.store.base import EntityQuery, HistoryQuery, Store, WriteOp, open_store

__all__ = ["EntityQuery", "HistoryQuery", "Store", "WriteOp", "open_store"]
