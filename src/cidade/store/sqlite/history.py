"""How the SQLite store keeps the history: rows of a series (an entity's attribute), compact.

A history row is written once into ``history_recent`` and once more by the merge into
``attr_history``, and each time into the WAL and the database file: its bytes are most of what a
device's message costs the writer. So a row names its series by number (``history_series``) and
keeps nothing twice (migration 0010):

- our instance ids without their 31-character prefix, any other id after a ``=``;
- ``observed`` (1) rather than the observedAt that is the row's ``time``;
- no modifiedAt equal to the time, no createdAt equal to the modifiedAt;
- the instance's JSON without its times, and none at all for a Property that is only a number
  (``num`` holds it).

Reads go through the ``history_rows`` view, which gives every column whole again; the reader
completes the instance (``instance_read``). Rows written before keep whole ids, and instances
with their times, and read the same.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import orjson

from cidade.store.changes import Step
from cidade.store.history import (
    INSTANCE_PREFIX,
    HistoryRow,
    changed_in,
    instance_suffixes,
    numeric_value,
)
from cidade.store.sqlite.database import Database

RECENT_MERGE_ROWS = 50_000  # history rows appended to history_recent before a merge

HISTORY_COLUMNS = (
    "sid, time, instance_id, dataset_id, observed, modified_at, created_at, instance, num"
)
INSERT_RECENT = f"INSERT INTO history_recent({HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
INSERT_HISTORY = f"INSERT INTO attr_history({HISTORY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
# The series of one entity (parameters: tenant, entity id), of one attribute (and the IRI).
ENTITY_SERIES = "SELECT sid FROM history_series WHERE tenant = ? AND entity_id = ?"
ATTRIBUTE_SERIES = ENTITY_SERIES + " AND attr = ?"

_PREFIX_LENGTH = len(INSTANCE_PREFIX)
_TIME_MEMBERS = frozenset(("observedAt", "createdAt", "modifiedAt"))
_BARE_WITH_TIMES = _TIME_MEMBERS | {"type", "value"}
_NOT_KEPT = _TIME_MEMBERS | {"instanceId"}
_BARE = _BARE_WITH_TIMES | {"instanceId"}  # a Property whose number is all that is kept


def merge_recent(conn: sqlite3.Connection) -> int:
    """Move every row of history_recent into attr_history, in attr_history's order (one sorted
    run: each series' pages are written once), inside the caller's transaction; how many.
    A row whose key is already there replaces it (the later write of the same instance)."""
    top = conn.execute("SELECT max(rowid) FROM history_recent").fetchone()[0]
    if top is None:
        return 0
    moved = conn.execute(
        f"INSERT OR REPLACE INTO attr_history({HISTORY_COLUMNS}) SELECT {HISTORY_COLUMNS}"
        " FROM history_recent WHERE rowid <= ? ORDER BY sid, time, instance_id, rowid",
        (top,),
    ).rowcount
    # Nothing else writes in between (the caller's transaction): no WHERE, so that SQLite
    # empties the table whole rather than deleting row by row.
    conn.execute("DELETE FROM history_recent")
    return moved


class SeriesNumbers:
    """The history's series numbers, given, read and deleted here only, on the writer thread.

    It remembers the numbers between writes: a batch of a thousand devices' measures would
    otherwise read three thousand of them back (a twentieth of the writer's time). What it
    remembers is forgotten whenever it might be wrong: after a rollback (a number given in a
    write that did not last), after another connection's commit (``PRAGMA data_version``: a
    command-line tool, say), when series are deleted, and past ``LIMIT`` entities."""

    LIMIT = 100_000

    def __init__(self, db: Database) -> None:
        self._db = db  # counts its rollbacks
        # (tenant, entity id) -> {attribute IRI: series number}
        self._known: dict[tuple[str, str], dict[str, int]] = {}
        self._seen: tuple[int, int] | None = None

    def changes(self, conn: sqlite3.Connection, tenant: str, steps: Iterable[Step]) -> list[tuple]:
        """The history rows of a write's steps (``Applied.history_steps``: every instance each
        step changed), as the history tables' columns (HISTORY_COLUMNS) hold them, their
        series numbered. A device's measures go through here by the thousand: one pass, and
        the series looked up once per step."""
        self._check(conn)
        known = self._known
        ids = instance_suffixes()
        rows: list[tuple] = []
        unnumbered: list[tuple[int, str, str]] = []  # (row, entity id, attribute)
        for eid, old, new in steps:
            assert new is not None
            series = known.get((tenant, eid))
            now = new["modifiedAt"]
            for attr, inst in changed_in(old, new):
                sid = series.get(attr) if series is not None else None
                if sid is None:
                    unnumbered.append((len(rows), eid, attr))
                given = inst.get("instanceId")
                kept_id = next(ids) if given is None else short_instance_id(given)
                rows.append(compact(sid or 0, inst, now, kept_id))
        if unnumbered:
            sids = self._numbers(conn, tenant, {(eid, attr) for _, eid, attr in unnumbered})
            for n, eid, attr in unnumbered:
                rows[n] = (sids[(eid, attr)], *rows[n][1:])
        return rows

    def records(
        self, conn: sqlite3.Connection, tenant: str, rows: Iterable[tuple[str, HistoryRow]]
    ) -> list[tuple]:
        """(entity id, history row) pairs as the history tables' columns hold them, their
        series numbered."""
        self._check(conn)
        rows = list(rows)
        sids = self._numbers(conn, tenant, {(eid, row[0]) for eid, row in rows})
        return [record(sids[(eid, row[0])], row) for eid, row in rows]

    def forget_entities(self, conn: sqlite3.Connection, entities: list[tuple[str, str]]) -> int:
        """Delete the whole history of each (tenant, entity id), and its series; how many rows.
        history_recent must be merged first."""
        rows = conn.executemany(
            f"DELETE FROM attr_history WHERE sid IN ({ENTITY_SERIES})", entities
        ).rowcount
        conn.executemany("DELETE FROM history_series WHERE tenant = ? AND entity_id = ?", entities)
        self._known.clear()
        return rows

    def drop_empty(self, conn: sqlite3.Connection) -> None:
        """Delete the series left without history. history_recent must be merged first."""
        conn.execute(
            "DELETE FROM history_series AS s WHERE NOT EXISTS"
            " (SELECT 1 FROM attr_history h WHERE h.sid = s.sid)"
        )
        self._known.clear()

    def _check(self, conn: sqlite3.Connection) -> None:
        """Forget every number when one might be wrong (the class's docstring)."""
        seen = (self._db.rollbacks, conn.execute("PRAGMA data_version").fetchone()[0])
        if seen != self._seen or len(self._known) > self.LIMIT:
            self._known.clear()
            self._seen = seen

    def _numbers(
        self, conn: sqlite3.Connection, tenant: str, wanted: set[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """The number of each (entity id, attribute IRI), those not known yet numbered now,
        inside the caller's write transaction (one writer holds the lock: max() cannot
        collide)."""
        known = self._known
        found: dict[tuple[str, str], int] = {}
        asked: set[tuple[str, str]] = set()
        for key in wanted:
            sid = known.get((tenant, key[0]), {}).get(key[1])
            if sid is None:
                asked.add(key)
            else:
                found[key] = sid
        ids = list({eid for eid, _ in asked})
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for sid, eid, attr in conn.execute(
                f"SELECT sid, entity_id, attr FROM history_series WHERE tenant = ?"
                f" AND entity_id IN ({marks})",
                (tenant, *chunk),
            ):
                if (eid, attr) in asked:
                    found[(eid, attr)] = sid
        missing = sorted(asked - found.keys())
        if missing:
            top = conn.execute("SELECT coalesce(max(sid), 0) FROM history_series").fetchone()[0]
            for n, key in enumerate(missing, top + 1):
                found[key] = n
            conn.executemany(
                "INSERT INTO history_series(sid, tenant, entity_id, attr) VALUES (?, ?, ?, ?)",
                [(found[key], tenant, *key) for key in missing],
            )
        for eid, attr in asked:
            known.setdefault((tenant, eid), {})[attr] = found[(eid, attr)]
        return found


def record(sid: int, row: HistoryRow) -> tuple:
    """One history row (``history_row``'s) in the compact form (the module's docstring)."""
    return compact(sid, row[7], row[5], short_instance_id(row[2]))


def compact(sid: int, inst: dict[str, Any], now: str, kept_id: str) -> tuple:
    """The compact row of one instance (``history_row``'s columns, the module's docstring),
    its id as ``short_instance_id`` keeps it; ``now`` stands in for its missing system times."""
    modified = inst.get("modifiedAt") or now
    observed = inst.get("observedAt")
    t = observed or modified
    created = inst.get("createdAt") or modified
    num = numeric_value(inst)
    kept = None if num is not None and inst.keys() <= _BARE else _json(inst)
    return (
        sid,
        t,
        kept_id,
        inst.get("datasetId") or "",
        1 if observed is not None else None,
        None if modified == t else modified,
        None if created == modified else created,
        kept,
        num,
    )


def _json(inst: dict[str, Any]) -> str:
    """An instance's JSON as the history keeps it: without its id and times (columns)."""
    return orjson.dumps({k: v for k, v in inst.items() if k not in _NOT_KEPT}).decode()


def short_instance_id(instance_id: str) -> str:
    """An instance id as the history tables keep it: one of ours (instance_ids) without its
    prefix, any other marked with a leading ``=``."""
    if instance_id.startswith(INSTANCE_PREFIX):
        rest = instance_id[_PREFIX_LENGTH:]
        if rest and ":" not in rest and rest[0] != "=":
            return rest
    return "=" + instance_id


def full_instance_id(kept: str) -> str:
    if kept[:1] == "=":
        return kept[1:]
    if ":" in kept:
        return kept  # written whole, before ids were kept short
    return INSTANCE_PREFIX + kept


def instance_read(
    text: str | None, num: Any, observed: str | None, modified: str, created: str
) -> dict[str, Any]:
    """An instance whole again, from a ``history_rows`` row."""
    item: dict[str, Any] = (
        {"type": "Property", "value": num} if text is None else orjson.loads(text)
    )
    if observed is not None and "observedAt" not in item:
        item["observedAt"] = observed
    item.setdefault("createdAt", created)
    item.setdefault("modifiedAt", modified)
    return item
