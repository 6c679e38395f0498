"""SqliteStore: the Store interface on one SQLite file."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson

from cidade.hub.query.geo import geometry_bbox
from cidade.hub.query.sqlite_q import install_sqlite_functions, to_sqlite
from cidade.store.base import Entity, EntityQuery, QueryResult, TypeExpr, WriteOp
from cidade.store.sqlite.database import Database

SCHEMA_VERSION = 1


def _setup(conn: sqlite3.Connection) -> None:
    install_sqlite_functions(conn)


def _init(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SystemExit(
            f"this database has schema version {version}, newer than this Cidade "
            f"({SCHEMA_VERSION}): upgrade Cidade"
        )
    if version < SCHEMA_VERSION:
        script = resources.files("cidade.store.sqlite").joinpath("schema.sql").read_text()
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={SCHEMA_VERSION};\nCOMMIT;"
        )
    conn.execute(
        "INSERT OR IGNORE INTO tenants(name, created_at) VALUES ('', ?)",
        (datetime.now(UTC).isoformat(),),
    )


def _type_sql(expr: TypeExpr, params: list[Any]) -> str:
    if isinstance(expr, str):
        params.append(expr)
        return "EXISTS (SELECT 1 FROM entity_types t WHERE t.rid = e.rid AND t.type = ?)"
    op, parts = expr
    joiner = " AND " if op == "and" else " OR "
    return "(" + joiner.join(_type_sql(p, params) for p in parts) + ")"


class SqliteStore:
    def __init__(self, path: str) -> None:
        self.db = Database(path, _setup)

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

    async def tenants(self) -> list[str]:
        rows = await self.db.read(lambda c: c.execute("SELECT name FROM tenants").fetchall())
        return [r[0] for r in rows]

    # -- entities -------------------------------------------------------------------------------

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT doc FROM entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
            ).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def write(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        def run(conn: sqlite3.Connection) -> list[Any]:
            conn.execute(
                "INSERT OR IGNORE INTO tenants(name, created_at) VALUES (?, ?)",
                (tenant, datetime.now(UTC).isoformat()),
            )
            ids = list({op.entity_id for op in ops})
            current: dict[str, tuple[int, Entity]] = {}
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for rid, eid, doc in conn.execute(
                    f"SELECT rid, id, doc FROM entities WHERE tenant = ? AND id IN ({marks})",
                    (tenant, *chunk),
                ):
                    current[eid] = (rid, orjson.loads(doc))
            results: list[Any] = []
            for op in ops:
                before = current.get(op.entity_id)
                conn.execute("SAVEPOINT entity")
                try:
                    after = op.apply(before[1] if before else None)
                    rid = self._put(
                        conn, tenant, op.entity_id, before[0] if before else None, after
                    )
                except Exception as exc:
                    conn.execute("ROLLBACK TO entity")
                    conn.execute("RELEASE entity")
                    results.append(exc)
                    continue
                conn.execute("RELEASE entity")
                if after is None:
                    current.pop(op.entity_id, None)
                else:
                    current[op.entity_id] = (rid, after)  # type: ignore[assignment]
                results.append(after)
            return results

        return await self.db.write(run)

    @staticmethod
    def _put(
        conn: sqlite3.Connection, tenant: str, entity_id: str, rid: int | None, doc: Entity | None
    ) -> int | None:
        if rid is not None:
            conn.execute("DELETE FROM entity_types WHERE rid = ?", (rid,))
            conn.execute("DELETE FROM entity_attrs WHERE rid = ?", (rid,))
            for (gid,) in conn.execute("SELECT gid FROM geo_rows WHERE rid = ?", (rid,)).fetchall():
                conn.execute("DELETE FROM geo_index WHERE gid = ?", (gid,))
            conn.execute("DELETE FROM geo_rows WHERE rid = ?", (rid,))
            if doc is None:
                conn.execute("DELETE FROM entities WHERE rid = ?", (rid,))
                return None
            conn.execute("UPDATE entities SET doc = ? WHERE rid = ?", (orjson.dumps(doc), rid))
        elif doc is None:
            return None
        else:
            rid = conn.execute(
                "INSERT INTO entities(tenant, id, doc) VALUES (?, ?, ?)",
                (tenant, entity_id, orjson.dumps(doc)),
            ).lastrowid
        conn.executemany(
            "INSERT INTO entity_types(tenant, type, rid) VALUES (?, ?, ?)",
            [(tenant, t, rid) for t in doc["type"]],
        )
        attr_rows = set()
        for attr, instances in doc.get("attrs", {}).items():
            for inst in instances:
                attr_rows.add((tenant, attr, rid, inst["type"]))
                if inst["type"] == "GeoProperty":
                    try:
                        box = geometry_bbox(inst["value"])
                    except Exception:
                        continue  # validated on the way in; a value we cannot box is not indexed
                    gid = conn.execute(
                        "INSERT INTO geo_rows(rid, attr, geometry) VALUES (?, ?, ?)",
                        (rid, attr, orjson.dumps(inst["value"])),
                    ).lastrowid
                    conn.execute(
                        "INSERT INTO geo_index VALUES (?, ?, ?, ?, ?)",
                        (gid, box[0], box[2], box[1], box[3]),
                    )
        conn.executemany("INSERT INTO entity_attrs VALUES (?, ?, ?, ?)", attr_rows)
        return rid

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        where = ["e.tenant = ?"]
        params: list[Any] = [tenant]
        if query.ids:
            where.append(f"e.id IN ({','.join('?' * len(query.ids))})")
            params.extend(query.ids)
        if query.id_pattern is not None:
            where.append("regexp(?, e.id)")
            params.append(query.id_pattern)
        if query.types is not None:
            where.append(_type_sql(query.types, params))
        if query.attrs:
            marks = ",".join("?" * len(query.attrs))
            where.append(
                "EXISTS (SELECT 1 FROM entity_attrs a WHERE a.tenant = e.tenant AND a.rid = e.rid"
                f" AND a.attr IN ({marks}))"
            )
            params.extend(query.attrs)
        if query.q is not None:
            sql, qparams = to_sqlite(query.q, "e.doc")
            where.append(sql)
            params.extend(qparams)
        geo = query.geo
        clause = " AND ".join(where)
        if geo is not None:
            return await self.db.read(lambda conn: self._geo_query(conn, clause, params, query))

        def run(conn: sqlite3.Connection) -> QueryResult:
            count = None
            if query.count:
                count = conn.execute(
                    f"SELECT count(*) FROM entities e WHERE {clause}", params
                ).fetchone()[0]
            if query.limit == 0:
                return QueryResult([], count)
            rows = conn.execute(
                f"SELECT e.doc FROM entities e WHERE {clause} ORDER BY e.rid LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
            return QueryResult([orjson.loads(r[0]) for r in rows], count)

        return await self.db.read(run)

    @staticmethod
    def _geo_query(
        conn: sqlite3.Connection, clause: str, params: list[Any], query: EntityQuery
    ) -> QueryResult:
        """The R*Tree gives candidates (boxes that meet the query's box); each candidate's
        geometry, kept beside the index, is then checked exactly. Only the page's documents are
        read and parsed."""
        geo = query.geo
        assert geo is not None
        box = geo.bbox()
        if box is not None:
            # Drive the join from the R*Tree so only the candidates' rows are visited.
            sql = (
                "SELECT g.rid, g.geometry FROM geo_index i JOIN geo_rows g ON g.gid = i.gid"
                " JOIN entities e ON e.rid = g.rid WHERE i.max_lon >= ? AND i.min_lon <= ?"
                f" AND i.max_lat >= ? AND i.min_lat <= ? AND g.attr = ? AND {clause}"
            )
            args: list[Any] = [box[0], box[2], box[1], box[3], geo.geoproperty, *params]
        else:
            sql = (
                "SELECT g.rid, g.geometry FROM geo_rows g JOIN entities e ON e.rid = g.rid"
                f" WHERE g.attr = ? AND {clause}"
            )
            args = [geo.geoproperty, *params]
        sql += " ORDER BY g.rid"
        wanted = None if query.count else query.offset + query.limit
        matched: list[int] = []
        last = None
        for rid, geometry in conn.execute(sql, args):
            if rid == last:
                continue  # another instance of an entity that already matched
            if geo.matches(orjson.loads(geometry)):
                matched.append(rid)
                last = rid
                if wanted is not None and len(matched) >= wanted:
                    break
        page = matched[query.offset : query.offset + query.limit]
        docs: dict[int, Entity] = {}
        for start in range(0, len(page), 500):
            chunk = page[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for rid, doc in conn.execute(
                f"SELECT rid, doc FROM entities WHERE rid IN ({marks})", chunk
            ):
                docs[rid] = orjson.loads(doc)
        return QueryResult([docs[r] for r in page], len(matched) if query.count else None)

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
                "SELECT DISTINCT t.type, a.attr, a.kind FROM entity_types t"
                " JOIN entity_attrs a ON a.rid = t.rid WHERE t.tenant = ?",
                (tenant,),
            ):
                attrs[typ].setdefault(attr, set()).add(kind)
            return [{"type": t, "count": counts[t], "attrs": attrs[t]} for t in sorted(counts)]

        return await self.db.read(run)

    async def attributes(self, tenant: str) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            info: dict[str, dict[str, Any]] = {}
            for attr, kind, n in conn.execute(
                "SELECT attr, kind, count(DISTINCT rid) FROM entity_attrs WHERE tenant = ?"
                " GROUP BY attr, kind",
                (tenant,),
            ):
                item = info.setdefault(
                    attr, {"attr": attr, "kinds": set(), "types": set(), "count": 0}
                )
                item["kinds"].add(kind)
                item["count"] += n
            for attr, typ in conn.execute(
                "SELECT DISTINCT a.attr, t.type FROM entity_attrs a"
                " JOIN entity_types t ON t.rid = a.rid WHERE a.tenant = ?",
                (tenant,),
            ):
                info[attr]["types"].add(typ)
            return [info[a] for a in sorted(info)]

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
