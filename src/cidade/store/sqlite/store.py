"""SqliteStore: the Store interface on one SQLite file."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson

from cidade.hub.errors import BadRequestData
from cidade.hub.query.geo import geometry_bbox
from cidade.hub.query.q import evaluate
from cidade.hub.query.sqlite_q import install_sqlite_functions, to_sqlite
from cidade.store.base import (
    TIME_COLUMNS,
    Entity,
    EntityQuery,
    HistoryQuery,
    QueryResult,
    TypeExpr,
    WriteOp,
)
from cidade.store.changes import apply_ops
from cidade.store.history import HistoryRow, changed_instances
from cidade.store.sqlite.database import Database


def _setup(conn: sqlite3.Connection) -> None:
    install_sqlite_functions(conn)


def migrations() -> list[tuple[int, str]]:
    """The versioned migrations shipped with this Cidade: (version, SQL), in order."""
    folder = resources.files("cidade.store.sqlite").joinpath("migrations")
    found = [
        (int(item.name[:4]), item.read_text())
        for item in folder.iterdir()
        if item.name.endswith(".sql") and item.name[:4].isdigit()
    ]
    return sorted(found)


SCHEMA_VERSION = max(v for v, _ in migrations())


def _init(conn: sqlite3.Connection) -> None:
    """Apply, in order, every migration newer than the database's ``user_version``; each one in
    its own transaction with the version bump, so a crash mid-way leaves a consistent schema."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SystemExit(
            f"this database has schema version {version}, newer than this Cidade "
            f"({SCHEMA_VERSION}): upgrade Cidade"
        )
    for number, sql in migrations():
        if number > version:
            conn.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version={number};\nCOMMIT;")
    conn.execute(
        "INSERT OR IGNORE INTO tenants(name, created_at) VALUES ('', ?)",
        (datetime.now(UTC).isoformat(),),
    )


def _type_sql(expr: TypeExpr, params: list[Any], rid: str = "e.rid") -> str:
    if isinstance(expr, str):
        params.append(expr)
        return f"EXISTS (SELECT 1 FROM entity_types t WHERE t.rid = {rid} AND t.type = ?)"
    op, parts = expr
    joiner = " AND " if op == "and" else " OR "
    return "(" + joiner.join(_type_sql(p, params, rid) for p in parts) + ")"


class SqliteStore:
    def __init__(
        self, path: str, *, history: bool = True, history_after_delete: bool = False
    ) -> None:
        self.db = Database(path, _setup)
        self.keep_history = history  # keep every change of every attribute (the temporal API)
        self.history_after_delete = history_after_delete

    async def open(self) -> None:
        self.db.start(_init)

    async def close(self) -> None:
        self.db.stop()

    # -- tenants --------------------------------------------------------------------------------

    async def tenant_exists(self, tenant: str) -> bool:
        if tenant == "":
            return True
        row = self.db.read_now(
            lambda c: c.execute("SELECT 1 FROM tenants WHERE name = ?", (tenant,)).fetchone()
        )
        return row is not None

    # -- entities -------------------------------------------------------------------------------

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
            ).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def write(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        return await self.db.write(
            lambda conn: _write_batch(
                conn, tenant, ops, self.keep_history, self.history_after_delete
            )
        )

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        geo = query.geo
        if isinstance(query.types, str) and geo is None:
            # One type: walk that type's index in rid order, visiting only its entities.
            source = "entity_types t CROSS JOIN entities e ON e.rid = t.rid"
            where = ["t.tenant = ? AND t.type = ? AND e.tenant = t.tenant"]
            params: list[Any] = [tenant, query.types]
            order = "t.rid"
        else:
            # `+e.tenant`: keep the (tenant, id) index from driving the scan, which would sort
            # every match before LIMIT; a scan in rowid order streams and stops at the page.
            source = "entities e"
            where = ["+e.tenant = ?"]
            params = [tenant]
            order = "e.rid"
            if query.types is not None:
                where.append(_type_sql(query.types, params))
        if query.ids:
            where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
            params.extend(query.ids)
        if query.id_pattern is not None:
            where.append("regexp(?, e.id)")
            params.append(query.id_pattern)
        if query.attrs:
            where.append(
                "(" + " OR ".join("json_type(e.doc, ?) IS NOT NULL" for _ in query.attrs) + ")"
            )
            params.extend(_attr_path(a) for a in query.attrs)
        if geo is not None:
            return await self.db.read(lambda conn: _geo_query(conn, tenant, query))
        if query.q is not None:
            sql, qparams = to_sqlite(query.q, "e.doc")
            where.append(sql)
            params.extend(qparams)
        clause = " AND ".join(where)

        def run(conn: sqlite3.Connection) -> QueryResult:
            count = None
            if query.count:
                count = conn.execute(
                    f"SELECT count(*) FROM {source} WHERE {clause}", params
                ).fetchone()[0]
            if query.limit == 0:
                return QueryResult([], count)
            rows = conn.execute(
                f"SELECT e.doc FROM {source} WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
            return QueryResult([orjson.loads(r[0]) for r in rows], count)

        return await self.db.read(run)

    # -- discovery ------------------------------------------------------------------------------

    async def entity_types(self, tenant: str) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            counts = dict(
                conn.execute(
                    "SELECT type, count(*) FROM entity_types WHERE tenant = ? GROUP BY type",
                    (tenant,),
                ).fetchall()
            )
            attrs: dict[str, dict[str, set[str]]] = {t: {} for t in counts}
            for typ, attr, kind in conn.execute(
                "SELECT type, attr, kind FROM attr_stats WHERE tenant = ? AND type != '' AND attr != ''",
                (tenant,),
            ):
                if typ in attrs:
                    attrs[typ].setdefault(attr, set()).add(kind)
            return [{"type": t, "count": counts[t], "attrs": attrs[t]} for t in sorted(counts)]

        return await self.db.read(run)

    async def attributes(self, tenant: str) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            info: dict[str, dict[str, Any]] = {}
            for typ, attr, kind, n in conn.execute(
                "SELECT type, attr, kind, instances FROM attr_stats WHERE tenant = ? AND attr != ''",
                (tenant,),
            ):
                item = info.setdefault(
                    attr, {"attr": attr, "kinds": set(), "types": set(), "count": 0}
                )
                if typ == "":
                    item["kinds"].add(kind)
                    item["count"] += n
                else:
                    item["types"].add(typ)
            return [info[a] for a in sorted(info)]

        return await self.db.read(run)

    # -- history --------------------------------------------------------------------------------

    async def history(
        self, tenant: str, query: HistoryQuery
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        column = TIME_COLUMNS[query.time_property]
        where = ["tenant = ?"]
        params: list[Any] = [tenant]
        where.append(f"entity_id IN ({','.join('?' * len(query.entity_ids))})")
        params.extend(query.entity_ids)
        if query.attrs:
            where.append(f"attr IN ({','.join('?' * len(query.attrs))})")
            params.extend(query.attrs)
        if query.after is not None:
            where.append(f"{column} {'>=' if query.after_inclusive else '>'} ?")
            params.append(query.after)
        if query.before is not None:
            where.append(f"{column} {'<=' if query.before_inclusive else '<'} ?")
            params.append(query.before)
        found = f"FROM attr_history WHERE {' AND '.join(where)}"
        if query.last_n is not None:
            found = (
                f"FROM (SELECT *, row_number() OVER (PARTITION BY entity_id, attr, dataset_id"
                f" ORDER BY {column} DESC, instance_id DESC) AS back {found})"
                f" WHERE back <= {int(query.last_n)}"
            )
        # Without lastN, no window (it sorted every row, instance JSON and all, twice: a year of
        # 15-minute readings took five times as long) and no sort: the primary key's order. An
        # entity id or attribute that every row shares is not read back for each row.
        one_id = query.entity_ids[0] if len(query.entity_ids) == 1 else None
        one_attr = query.attrs[0] if query.attrs and len(query.attrs) == 1 else None
        sql = (
            f"SELECT {'NULL' if one_id else 'entity_id'}, {'NULL' if one_attr else 'attr'},"
            f" instance_id, {column}, instance {found}"
            f" ORDER BY entity_id, attr, {column}, instance_id"
        )

        def run(conn: sqlite3.Connection) -> dict[str, dict[str, list[dict[str, Any]]]]:
            out: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for eid, attr, iid, t, inst in conn.execute(sql, params):
                item = orjson.loads(inst)
                item["instanceId"] = iid
                item["_t"] = t
                out.setdefault(eid or one_id, {}).setdefault(attr or one_attr, []).append(item)
            return out

        if not query.entity_ids:
            return {}
        return await self.db.read(run)

    async def add_history(self, tenant: str, entity_id: str, rows: list[HistoryRow]) -> None:
        """Append instances to an entity's history (the temporal API's own writes)."""

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO attr_history(tenant, entity_id, attr, dataset_id, instance_id, time,"
                " observed_at, modified_at, created_at, instance)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (tenant, entity_id, a, d, i, t, o, m, c, orjson.dumps(inst).decode())
                    for a, d, i, t, o, m, c, inst in rows
                ],
            )

        await self.db.write(run)

    async def delete_history(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None, every: bool
    ) -> int:
        """Forget an attribute's history: one datasetId's ("" = the default) or all of it."""
        sql = "DELETE FROM attr_history WHERE tenant = ? AND entity_id = ? AND attr = ?"
        params: list[Any] = [tenant, entity_id, attr]
        if not every:
            sql += " AND dataset_id = ?"
            params.append(dataset_id or "")
        return await self.db.write(lambda c: c.execute(sql, params).rowcount)

    async def replace_history_instance(
        self, tenant: str, entity_id: str, attr: str, row: HistoryRow
    ) -> bool:
        """Replace one instance (found by its instanceId) in place; False when there is none."""
        a, d, i, t, o, m, c, inst = row
        return await self.db.write(
            lambda conn: (
                conn.execute(
                    "UPDATE attr_history SET dataset_id = ?, time = ?, observed_at = ?,"
                    " modified_at = ?, created_at = ?, instance = ?"
                    " WHERE tenant = ? AND entity_id = ? AND attr = ? AND instance_id = ?",
                    (d, t, o, m, c, orjson.dumps(inst).decode(), tenant, entity_id, a, i),
                ).rowcount
                > 0
            )
        )

    async def delete_history_instance(
        self, tenant: str, entity_id: str, attr: str, instance_id: str
    ) -> bool:
        return await self.db.write(
            lambda c: (
                c.execute(
                    "DELETE FROM attr_history WHERE tenant = ? AND entity_id = ? AND attr = ?"
                    " AND instance_id = ?",
                    (tenant, entity_id, attr, instance_id),
                ).rowcount
                > 0
            )
        )

    # -- subscriptions --------------------------------------------------------------------------

    async def create_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        """Store a new subscription; False when one with its id exists in the tenant."""

        def run(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT OR IGNORE INTO tenants(name, created_at) VALUES (?, ?)",
                (tenant, datetime.now(UTC).isoformat()),
            )
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM subscriptions").fetchone()[0]
            cur = conn.execute(
                "INSERT OR IGNORE INTO subscriptions(tenant, id, doc, seq) VALUES (?, ?, ?, ?)",
                (tenant, sub["id"], orjson.dumps(sub).decode(), seq),
            )
            return cur.rowcount == 1

        return await self.db.write(run)

    async def get_subscription(self, tenant: str, sub_id: str) -> dict[str, Any] | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT doc FROM subscriptions WHERE tenant = ? AND id = ?", (tenant, sub_id)
            ).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def replace_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        return await self.db.write(
            lambda c: (
                c.execute(
                    "UPDATE subscriptions SET doc = ? WHERE tenant = ? AND id = ?",
                    (orjson.dumps(sub).decode(), tenant, sub["id"]),
                ).rowcount
                == 1
            )
        )

    async def delete_subscription(self, tenant: str, sub_id: str) -> bool:
        return await self.db.write(
            lambda c: (
                c.execute(
                    "DELETE FROM subscriptions WHERE tenant = ? AND id = ?", (tenant, sub_id)
                ).rowcount
                == 1
            )
        )

    async def list_subscriptions(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        def run(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            total = conn.execute(
                "SELECT count(*) FROM subscriptions WHERE tenant = ?", (tenant,)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT doc FROM subscriptions WHERE tenant = ? ORDER BY seq LIMIT ? OFFSET ?",
                (tenant, limit, offset),
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows], total

        return await self.db.read(run)

    # -- hosted @contexts -----------------------------------------------------------------------

    async def hosted_contexts(self) -> list[dict[str, Any]]:
        rows = await self.db.read(
            lambda c: c.execute("SELECT local_id, info, body FROM hosted_contexts").fetchall()
        )
        return [
            {"local_id": r[0], "info": orjson.loads(r[1]), "body": orjson.loads(r[2])} for r in rows
        ]

    async def save_hosted_context(self, local_id: str, info: dict[str, Any], body: Any) -> None:
        await self.db.write(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO hosted_contexts VALUES (?, ?, ?)",
                (local_id, orjson.dumps(info, default=str), orjson.dumps(body)),
            )
        )

    async def delete_hosted_context(self, local_id: str) -> None:
        await self.db.write(
            lambda c: c.execute("DELETE FROM hosted_contexts WHERE local_id = ?", (local_id,))
        )


def _write_batch(
    conn: sqlite3.Connection,
    tenant: str,
    ops: Sequence[WriteOp],
    history: bool = True,
    history_after_delete: bool = False,
) -> list[Any]:
    """Apply every op in memory first (an op that raises changes nothing), then write all the
    survivors' rows with a handful of executemany calls: per-row statements would cost more than
    everything else in a batch upsert."""
    conn.execute(
        "INSERT OR IGNORE INTO tenants(name, created_at) VALUES (?, ?)",
        (tenant, datetime.now(UTC).isoformat()),
    )
    ids = list(dict.fromkeys(op.entity_id for op in ops))
    rids: dict[str, int] = {}
    stored: dict[str, Entity] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for rid, eid, doc in conn.execute(
            f"SELECT rid, id, doc FROM entities WHERE tenant = ? AND id IN ({marks})",
            (tenant, *chunk),
        ):
            rids[eid] = rid
            stored[eid] = orjson.loads(doc)
    applied = apply_ops(ops, stored)
    # Rewrite the entities whose state changed: drop their derived rows, write the new ones.
    old_rids = [rids[eid] for eid in applied.changed if eid in rids]
    for start in range(0, len(old_rids), 500):
        chunk = old_rids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        conn.execute(f"DELETE FROM entity_types WHERE rid IN ({marks})", chunk)
        conn.execute(
            f"DELETE FROM geo_index WHERE gid IN (SELECT gid FROM geo_rows WHERE rid IN ({marks}))",
            chunk,
        )
        conn.execute(f"DELETE FROM geo_rows WHERE rid IN ({marks})", chunk)
    # One writer holds the write lock, so ids taken from max() cannot collide.
    next_rid = (conn.execute("SELECT max(rid) FROM entities").fetchone()[0] or 0) + 1
    next_gid = (conn.execute("SELECT max(gid) FROM geo_rows").fetchone()[0] or 0) + 1
    inserts: list[tuple] = []
    updates: list[tuple] = []
    deletes: list[tuple] = []
    type_rows: list[tuple] = []
    history_rows: list[tuple] = []
    forgotten: list[tuple[str, str]] = []
    geo_rows: list[tuple] = []
    geo_boxes: list[tuple] = []
    for eid in applied.changed:
        rid: int | None = rids.get(eid)
        doc = applied.after[eid]
        if history:
            if doc is None:
                if not history_after_delete:  # by default an entity's history goes with it
                    forgotten.append((tenant, eid))
            else:
                history_rows.extend(
                    (tenant, eid, a, d, i, t, o, m, c, orjson.dumps(inst).decode())
                    for a, d, i, t, o, m, c, inst in changed_instances(stored.get(eid), doc)
                )
        if doc is None:
            if rid is not None:
                deletes.append((rid,))
            continue
        if rid is None:
            rid = next_rid
            next_rid += 1
            inserts.append((rid, tenant, eid, orjson.dumps(doc).decode()))
        else:
            updates.append((orjson.dumps(doc).decode(), rid))
        type_rows.extend((tenant, t, rid) for t in doc["type"])
        for attr, instances in doc["attrs"].items():
            for inst in instances:
                if inst["type"] == "GeoProperty":
                    try:
                        box = geometry_bbox(inst["value"])
                    except Exception:
                        continue  # validated on the way in; a value we cannot box is not indexed
                    geo_rows.append(
                        (next_gid, tenant, rid, attr, orjson.dumps(inst["value"]).decode())
                    )
                    geo_boxes.append((next_gid, box[0], box[2], box[1], box[3]))
                    next_gid += 1
    conn.executemany("DELETE FROM entities WHERE rid = ?", deletes)
    conn.executemany("UPDATE entities SET doc = ? WHERE rid = ?", updates)
    conn.executemany("INSERT INTO entities(rid, tenant, id, doc) VALUES (?, ?, ?, ?)", inserts)
    conn.executemany("INSERT INTO entity_types(tenant, type, rid) VALUES (?, ?, ?)", type_rows)
    conn.executemany(
        "INSERT INTO attr_stats VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
        " SET instances = instances + excluded.instances",
        [(tenant, *key, n) for key, n in applied.stats().items() if n],
    )
    conn.execute("DELETE FROM attr_stats WHERE tenant = ? AND instances <= 0", (tenant,))
    conn.executemany(
        "INSERT INTO geo_rows(gid, tenant, rid, attr, geometry) VALUES (?, ?, ?, ?, ?)", geo_rows
    )
    conn.executemany("INSERT INTO geo_index VALUES (?, ?, ?, ?, ?)", geo_boxes)
    conn.executemany("DELETE FROM attr_history WHERE tenant = ? AND entity_id = ?", forgotten)
    conn.executemany(
        "INSERT INTO attr_history(tenant, entity_id, attr, dataset_id, instance_id, time,"
        " observed_at, modified_at, created_at, instance) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        history_rows,
    )
    return applied.results


def _attr_path(iri: str) -> str:
    if '"' in iri or "\\" in iri:
        raise BadRequestData(f"attribute {iri!r} cannot be queried")
    return f'$.attrs."{iri}"'


def geo_candidates_sql(tenant: str, query: EntityQuery) -> tuple[str, list[Any]]:
    """(rid, geometry) of the entities whose geoproperty's box meets the query's box."""
    geo = query.geo
    assert geo is not None
    params: list[Any] = []
    box = geo.bbox()
    if box is not None:
        sql = (
            "SELECT g.rid, g.geometry FROM geo_index i JOIN geo_rows g ON g.gid = i.gid"
            " WHERE i.max_lon >= ? AND i.min_lon <= ? AND i.max_lat >= ? AND i.min_lat <= ?"
            " AND g.tenant = ? AND g.attr = ?"
        )
        params.extend([box[0], box[2], box[1], box[3], tenant, geo.geoproperty])
    else:  # disjoint, minDistance: every entity with the geoproperty is a candidate
        sql = "SELECT g.rid, g.geometry FROM geo_rows g WHERE g.tenant = ? AND g.attr = ?"
        params.extend([tenant, geo.geoproperty])
    if query.types is not None:
        sql += " AND " + _type_sql(query.types, params, "g.rid")
    return sql, params


def _geo_query(conn: sqlite3.Connection, tenant: str, query: EntityQuery) -> QueryResult:
    """The R*Tree gives candidates (boxes that meet the query's box) and the entity type is
    checked on its index; each candidate's geometry, kept beside the index, is then checked
    exactly, and only then is the entity read and the other filters (ids, idPattern, attrs, q)
    evaluated in memory, with the same semantics as their SQL forms (property-tested).

    Candidates come in R*Tree order, not sorted, so the scan stops as soon as the page is full
    (unless a count was asked for): the order is stable while the data does not change."""
    geo = query.geo
    assert geo is not None
    sql, params = geo_candidates_sql(tenant, query)
    ids = set(query.ids)
    pattern = re.compile(query.id_pattern) if query.id_pattern is not None else None
    wanted = None if query.count else query.offset + query.limit
    matched: list[Entity] = []
    seen: set[int] = set()
    for rid, geometry in conn.execute(sql, params):
        if rid in seen or not geo.matches(geometry):
            continue  # another instance of an entity already taken, or no match
        seen.add(rid)
        (doc,) = conn.execute("SELECT doc FROM entities WHERE rid = ?", (rid,)).fetchone()
        entity = orjson.loads(doc)
        if ids and entity["id"] not in ids:
            continue
        if pattern is not None and not pattern.search(entity["id"]):
            continue
        if query.attrs and not any(a in entity["attrs"] for a in query.attrs):
            continue
        if query.q is not None and not evaluate(query.q, entity):
            continue
        matched.append(entity)
        if wanted is not None and len(matched) >= wanted:
            break
    page = matched[query.offset : query.offset + query.limit]
    return QueryResult(page, len(matched) if query.count else None)
