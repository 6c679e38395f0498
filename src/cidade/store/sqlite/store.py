"""SqliteStore: the Store interface on one SQLite file."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson

from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.geo import geometry_bbox
from cidade.ngsild.query.q import evaluate
from cidade.ngsild.query.scope import evaluate_scope
from cidade.ngsild.timefmt import now as now_iso
from cidade.store.base import (
    CSOURCE_KIND,
    ENTITY_KIND,
    TIME_COLUMNS,
    ChangeWatch,
    Entity,
    EntityQuery,
    HistoryQuery,
    OutboxEntry,
    OutboxItem,
    Outcome,
    QueryResult,
    RegistrationApply,
    RegistrationMatch,
    TypeExpr,
    WriteChain,
    WriteOp,
)
from cidade.store.changes import apply_ops
from cidade.store.history import HistoryRow, history_source, value_item
from cidade.store.outbox import UNPARK_LANE_SQLITE, attempt_row, status_info, status_rows
from cidade.store.sqlite.auth import SqliteAuth
from cidade.store.sqlite.database import Database
from cidade.store.sqlite.devices import SqliteDevices
from cidade.store.sqlite.history import (
    ATTRIBUTE_SERIES,
    ENTITY_SERIES,
    INSERT_HISTORY,
    INSERT_RECENT,
    RECENT_MERGE_ROWS,
    SeriesNumbers,
    full_instance_id,
    instance_read,
    merge_recent,
    record,
    short_instance_id,
)
from cidade.store.sqlite.occurrences import SqliteOccurrences
from cidade.store.sqlite.order import install_order_functions, order_sqlite
from cidade.store.sqlite.q import install_sqlite_functions, scope_to_sqlite, to_sqlite

log = logging.getLogger("cidade.store")


def _setup(conn: sqlite3.Connection) -> None:
    install_sqlite_functions(conn)
    install_order_functions(conn)


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


class SqliteStore(SqliteAuth, SqliteDevices, SqliteOccurrences):
    def __init__(
        self, path: str, *, history: bool = True, history_after_delete: bool = False
    ) -> None:
        self.db = Database(path, _setup)
        self.keep_history = history  # keep every change of every attribute (the temporal API)
        self.history_after_delete = history_after_delete
        self.watch: ChangeWatch | None = None
        # (subscription epoch, {tenant: compiled subscriptions}); only the writer thread uses it
        self.watching: tuple[int, dict[str, list[Any]]] = (-1, {})
        # History rows appended to history_recent since the last merge, as far as this process
        # knows (another process writing the same file merges its own): only the writer thread.
        self.recent_rows = 0
        self.series = SeriesNumbers(self.db)  # only the writer thread

    async def exists(self) -> bool:
        return self.db.exists

    async def open(self) -> None:
        self.db.start(_init)

    async def close(self) -> None:
        if self.db.started:
            try:  # leave the history whole in attr_history (the next start would manage anyway)
                await self.db.write(merge_recent)
            except Exception:
                log.warning(
                    "recent history not merged at close (it will be at start)", exc_info=True
                )
        self.db.stop()

    async def _settle_history(self, where: str, params: Sequence[Any]) -> None:
        """Merge history_recent first when it holds rows a read is about to ask for (reads look
        at attr_history only); ``where`` is a condition on history_series' tenant and
        entity_id columns."""
        pending = await self.db.read(
            lambda c: c.execute(
                "SELECT 1 FROM history_recent WHERE sid IN"
                f" (SELECT sid FROM history_series WHERE {where}) LIMIT 1",
                params,
            ).fetchone()
        )
        if pending is not None:
            await self.db.write(merge_recent)

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

    async def get_entities(self, tenant: str, entity_ids: Sequence[str]) -> list[Entity]:
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return []

        def run(conn: sqlite3.Connection) -> list[Entity]:
            found: list[Entity] = []
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    "SELECT doc FROM entities WHERE tenant = ?"
                    f" AND id IN ({','.join('?' * len(chunk))})",
                    (tenant, *chunk),
                ).fetchall()
                found.extend(orjson.loads(r[0]) for r in rows)
            return found

        return await self.db.read(run)

    async def write(
        self, tenant: str, ops: Sequence[WriteOp], *, chain: WriteChain | None = None
    ) -> list[Any]:
        results, notified = await self.db.write(
            lambda conn: _write_batch(conn, tenant, ops, self), chain
        )
        if notified and self.watch is not None:
            self.watch.enqueued()
        return results

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
        if query.scope is not None:
            sql, qparams = scope_to_sqlite(query.scope, "e.doc")
            where.append(sql)
            params.extend(qparams)
        clause = " AND ".join(where)
        if query.order:
            select = _ordered_sql(query, source, clause)
        else:
            select = f"SELECT e.doc FROM {source} WHERE {clause} ORDER BY {order} LIMIT ? OFFSET ?"

        def run(conn: sqlite3.Connection) -> QueryResult:
            count = None
            if query.count:
                count = conn.execute(
                    f"SELECT count(*) FROM {source} WHERE {clause}", params
                ).fetchone()[0]
            if query.limit == 0:
                return QueryResult([], count)
            rows = conn.execute(select, [*params, query.limit, query.offset]).fetchall()
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
        if query.dataset_ids:
            where.append(f"dataset_id IN ({','.join('?' * len(query.dataset_ids))})")
            params.extend(query.dataset_ids)
        if query.after is not None:
            where.append(f"{column} {'>=' if query.after_inclusive else '>'} ?")
            params.append(query.after)
        if query.before is not None:
            where.append(f"{column} {'<=' if query.before_inclusive else '<'} ?")
            params.append(query.before)
        if query.time_property == "deletedAt":
            # Only the instances that record deletions (store/history.py deletion).
            where.append("json_extract(instance, '$.deletedAt') IS NOT NULL")
        found = history_source(f"history_rows WHERE {' AND '.join(where)}", column, query)
        # Without lastN or a page cut, no window (it sorted every row, instance JSON and all,
        # twice: a year of 15-minute readings took five times as long) and no sort: the primary
        # key's order. An entity id or attribute that every row shares is not read back per row.
        one_id = query.entity_ids[0] if len(query.entity_ids) == 1 else None
        one_attr = query.attrs[0] if query.attrs and len(query.attrs) == 1 else None
        if query.values_only:
            sql = (
                f"SELECT {'NULL' if one_id else 'entity_id'}, {'NULL' if one_attr else 'attr'},"
                f" dataset_id, {column}, num, CASE WHEN num IS NULL THEN instance END {found}"
                f" ORDER BY entity_id, attr, {column}, instance_id{_limit(query)}"
            )
        else:
            sql = (
                f"SELECT {'NULL' if one_id else 'entity_id'}, {'NULL' if one_attr else 'attr'},"
                f" instance_id, {column}, instance, num, observed_at, modified_at, created_at"
                f" {found}"
                f" ORDER BY entity_id, attr, {column}, instance_id{_limit(query)}"
            )

        def run(conn: sqlite3.Connection) -> dict[str, dict[str, list[dict[str, Any]]]]:
            out: dict[str, dict[str, list[dict[str, Any]]]] = {}
            if query.values_only:
                for eid, attr, ds, t, num, inst in conn.execute(sql, params):
                    item = value_item(ds, t, num, inst)
                    out.setdefault(eid or one_id, {}).setdefault(attr or one_attr, []).append(item)
                return out
            for eid, attr, iid, t, inst, num, observed, modified, created in conn.execute(
                sql, params
            ):
                item = instance_read(inst, num, observed, modified, created)
                item["instanceId"] = full_instance_id(iid)
                item["_t"] = t
                out.setdefault(eid or one_id, {}).setdefault(attr or one_attr, []).append(item)
            return out

        if not query.entity_ids:
            return {}
        await self._settle_history(
            f"tenant = ? AND entity_id IN ({','.join('?' * len(query.entity_ids))})",
            [tenant, *query.entity_ids],
        )
        return await self.db.read(run)

    async def history_stats(
        self,
        tenant: str,
        entity_id: str,
        attrs: Sequence[str],
        time_property: str,
        bounds: list[str],
        methods: Sequence[str],
    ) -> dict[str, dict[str, list[tuple]]] | None:
        """Per attribute, per datasetId ("" for none), per period [bounds[k], bounds[k+1]) that
        holds instances: (k, instances, numbers, sum, min, max, sum of squares, distinct
        numbers, sum of squared deviations from the mean), computed by SQLite over the number
        column in time order (the primary key's), so sums add up exactly as Python's do."""
        column = TIME_COLUMNS[time_property]
        periods = list(zip(range(len(bounds) - 1), bounds, bounds[1:], strict=False))
        values = ",".join("(?, ?, ?)" for _ in periods)
        params: list[Any] = [v for p in periods for v in p]
        match = "h.tenant = ? AND h.entity_id = ?"
        keys: list[Any] = [tenant, entity_id]
        if attrs:
            match += f" AND h.attr IN ({','.join('?' * len(attrs))})"
            keys.extend(attrs)
        # Only what the methods need: a distinct count and the second pass over each period
        # for the deviations cost as much as the rest together.
        wanted = set(methods)
        distinct = "count(DISTINCT h.num)" if "distinctCount" in wanted else "NULL"
        deviations = "NULL"
        if "stddev" in wanted:
            deviations = (
                "(SELECT sum((h.num - s.mean) * (h.num - s.mean)) FROM history_rows h"
                " WHERE h.tenant = ? AND h.entity_id = ? AND h.attr = s.attr"
                f" AND h.dataset_id = s.ds AND h.{column} >= s.lo AND h.{column} < s.hi)"
            )
        sql = (
            f"WITH b(k, lo, hi) AS (VALUES {values}),"
            " s AS (SELECT h.attr AS attr, h.dataset_id AS ds, b.k AS k, b.lo AS lo, b.hi AS hi,"
            " count(*) AS n, count(h.num) AS nn, sum(h.num) AS total, min(h.num) AS low,"
            f" max(h.num) AS high, sum(h.num * h.num) AS sq, {distinct} AS dc,"
            " avg(h.num) AS mean"
            f" FROM b JOIN history_rows h ON {match}"
            f" AND h.{column} >= b.lo AND h.{column} < b.hi"
            " GROUP BY h.attr, h.dataset_id, b.k)"
            f" SELECT attr, ds, k, n, nn, total, low, high, sq, dc, {deviations} FROM s"
        )
        params = [*params, *keys]
        if "stddev" in wanted:
            params += [tenant, entity_id]

        def run(conn: sqlite3.Connection) -> dict[str, dict[str, list[tuple]]]:
            out: dict[str, dict[str, list[tuple]]] = {}
            for attr, ds, *row in conn.execute(sql, params):
                out.setdefault(attr, {}).setdefault(ds, []).append(tuple(row))
            return out

        await self._settle_history("tenant = ? AND entity_id = ?", [tenant, entity_id])
        return await self.db.read(run)

    async def add_history(self, tenant: str, entity_id: str, rows: list[HistoryRow]) -> None:
        """Add instances to an entity's history (the temporal API's own writes); one observed
        at the time an instance of its series (attribute, datasetId) was replaces it."""

        def run(conn: sqlite3.Connection) -> None:
            records = self.series.records(conn, tenant, [(entity_id, row) for row in rows])
            observed = [(r[0], r[1], r[3]) for r in records if r[4]]
            if observed:
                _settled(conn).executemany(
                    "DELETE FROM attr_history WHERE sid = ? AND time = ? AND dataset_id = ?"
                    " AND observed",
                    observed,
                )
            conn.executemany(INSERT_HISTORY, records)

        await self.db.write(run)

    async def delete_history(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None, every: bool
    ) -> int:
        """Forget an attribute's history: one datasetId's ("" = the default) or all of it."""
        sql = f"DELETE FROM attr_history WHERE sid IN ({ATTRIBUTE_SERIES})"
        params: list[Any] = [tenant, entity_id, attr]
        if not every:
            sql += " AND dataset_id = ?"
            params.append(dataset_id or "")
        return await self.db.write(lambda c: _settled(c).execute(sql, params).rowcount)

    async def replace_history_instance(
        self, tenant: str, entity_id: str, attr: str, row: HistoryRow
    ) -> bool:
        """Replace one instance (found by its instanceId) in place; False when there is none."""
        _, t, kept, d, o, m, c, inst, num = record(0, row)  # its series stays (sid unused)
        return await self.db.write(
            lambda conn: (
                _settled(conn)
                .execute(
                    "UPDATE attr_history SET time = ?, dataset_id = ?, observed = ?,"
                    " modified_at = ?, created_at = ?, instance = ?, num = ?"
                    f" WHERE sid IN ({ATTRIBUTE_SERIES}) AND instance_id IN (?, ?)",
                    (t, d, o, m, c, inst, num, tenant, entity_id, row[0], kept, row[2]),
                )
                .rowcount
                > 0
            )
        )

    async def delete_history_instance(
        self, tenant: str, entity_id: str, attr: str, instance_id: str
    ) -> bool:
        return await self.db.write(
            lambda c: (
                _settled(c)
                .execute(
                    f"DELETE FROM attr_history WHERE sid IN ({ATTRIBUTE_SERIES})"
                    " AND instance_id IN (?, ?)",
                    (tenant, entity_id, attr, short_instance_id(instance_id), instance_id),
                )
                .rowcount
                > 0
            )
        )

    # -- history of deleted entities ----------------------------------------------------------

    async def deleted_entity(self, tenant: str, entity_id: str) -> dict[str, Any] | None:
        """{id, type, deletedAt} of an entity deleted while its history was kept, while some of
        that history remains and no entity with its id exists again; else None."""
        found = await self.query_deleted(tenant, EntityQuery(ids=[entity_id], limit=1))
        return found.entities[0] if found.entities else None

    async def query_deleted(self, tenant: str, query: EntityQuery) -> QueryResult:
        """The deleted entities with history that match the ids, idPattern, type and attrs of
        a query (q and geo-queries need a current state: the caller leaves them out), in
        deletion order, paged by its limit and offset."""
        where = [
            "d.tenant = ?",
            "NOT EXISTS (SELECT 1 FROM entities e WHERE e.tenant = d.tenant AND e.id = d.id)",
        ]
        params: list[Any] = [tenant]
        history = (
            "SELECT 1 FROM history_series s WHERE s.tenant = d.tenant AND s.entity_id = d.id"
            " AND EXISTS (SELECT 1 FROM attr_history h WHERE h.sid = s.sid)"
        )
        if query.attrs:
            history += f" AND s.attr IN ({','.join('?' * len(query.attrs))})"
            params.extend(query.attrs)
        where.append(f"EXISTS ({history})")
        if query.ids:
            where.append(f"d.id IN ({','.join('?' * len(query.ids))})")
            params.extend(query.ids)
        if query.id_pattern is not None:
            where.append("regexp(?, d.id)")
            params.append(query.id_pattern)
        if query.types is not None:
            where.append(_deleted_type_sql(query.types, params))
        clause = " AND ".join(where)

        def run(conn: sqlite3.Connection) -> QueryResult:
            count = None
            if query.count:
                count = conn.execute(
                    f"SELECT count(*) FROM deleted_entities d WHERE {clause}", params
                ).fetchone()[0]
            rows = conn.execute(
                f"SELECT d.id, d.types, d.deleted_at FROM deleted_entities d WHERE {clause}"
                " ORDER BY d.deleted_at, d.id LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
            found = [{"id": i, "type": orjson.loads(t), "deletedAt": at} for i, t, at in rows]
            return QueryResult(found, count)

        await self._settle_history("tenant = ?", [tenant])
        return await self.db.read(run)

    async def forget_history(self, tenant: str, entity_id: str) -> bool:
        """Delete an entity's whole history (and its record of a deleted entity); whether there
        was any."""

        def run(conn: sqlite3.Connection) -> bool:
            rows = self.series.forget_entities(_settled(conn), [(tenant, entity_id)])
            marks = conn.execute(
                "DELETE FROM deleted_entities WHERE tenant = ? AND id = ?", (tenant, entity_id)
            ).rowcount
            return rows + marks > 0

        return await self.db.write(run)

    # -- retention ------------------------------------------------------------------------------

    async def purge_history(self, cutoffs: dict[str, str], default: str | None) -> int:
        """Delete expired history (hub/retention.py): per entity, the instances older than the
        earliest cutoff of its types ("" stands for keep for ever: nothing is older), a few
        hundred entities per transaction so writers are not held up for long."""
        rules = " UNION ALL ".join("SELECT ?, ?" for _ in cutoffs) or "SELECT NULL, NULL WHERE 0"
        params: list[Any] = [v for pair in cutoffs.items() for v in pair]
        sql = (
            f"WITH rules(type, cutoff) AS ({rules}),"
            " typed(tenant, id, type) AS ("
            " SELECT e.tenant, e.id, t.type FROM entities e JOIN entity_types t ON t.rid = e.rid"
            " UNION SELECT d.tenant, d.id, j.value FROM deleted_entities d, json_each(d.types) j)"
            " SELECT typed.tenant, typed.id, min(coalesce(rules.cutoff, ?)) AS expiry"
            " FROM typed LEFT JOIN rules ON rules.type = typed.type"
            " GROUP BY typed.tenant, typed.id HAVING expiry != ''"
        )
        params.append(default or "")
        expiring = await self.db.read(lambda c: c.execute(sql, params).fetchall())
        await self.db.write(merge_recent)
        deleted = 0
        for start in range(0, len(expiring), 500):
            chunk = expiring[start : start + 500]
            deleted += await self.db.write(
                lambda c, chunk=chunk: (
                    c.executemany(
                        f"DELETE FROM attr_history WHERE sid IN ({ENTITY_SERIES}) AND time < ?",
                        chunk,
                    ).rowcount
                )
            )

        def untyped_and_marks(conn: sqlite3.Connection) -> int:
            merge_recent(conn)
            count = 0
            if default is not None:
                # History no entity record names a type for (kept before migration 0005): the default.
                count = conn.execute(
                    "DELETE FROM attr_history WHERE time < ? AND sid IN (SELECT s.sid"
                    " FROM history_series s WHERE NOT EXISTS (SELECT 1 FROM entities e"
                    " WHERE e.tenant = s.tenant AND e.id = s.entity_id)"
                    " AND NOT EXISTS (SELECT 1 FROM deleted_entities d"
                    " WHERE d.tenant = s.tenant AND d.id = s.entity_id))",
                    (default,),
                ).rowcount
            # Series left empty, then the marks of deleted entities with no history left.
            self.series.drop_empty(conn)
            conn.execute(
                "DELETE FROM deleted_entities AS d WHERE NOT EXISTS (SELECT 1 FROM history_series s"
                " WHERE s.tenant = d.tenant AND s.entity_id = d.id)"
            )
            return count

        return deleted + await self.db.write(untyped_and_marks)

    # -- subscriptions --------------------------------------------------------------------------

    async def create_subscription(
        self,
        tenant: str,
        sub: dict[str, Any],
        *,
        kind: str = ENTITY_KIND,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        """Store a new subscription; False when one with its id exists in the tenant."""

        def run(conn: sqlite3.Connection) -> bool:
            conn.execute(
                "INSERT OR IGNORE INTO tenants(name, created_at) VALUES (?, ?)",
                (tenant, datetime.now(UTC).isoformat()),
            )
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM subscriptions").fetchone()[0]
            cur = conn.execute(
                "INSERT OR IGNORE INTO subscriptions(tenant, id, doc, seq, kind)"
                " VALUES (?, ?, ?, ?, ?)",
                (tenant, sub["id"], orjson.dumps(sub).decode(), seq, kind),
            )
            if cur.rowcount != 1:
                return False
            conn.execute(
                "DELETE FROM subscription_status WHERE tenant = ? AND id = ?", (tenant, sub["id"])
            )
            if outbox:
                _insert_outbox(conn, tenant, list(outbox))
            _bump_epoch(conn)
            return True

        created = await self.db.write(run)
        if created and outbox and self.watch is not None:
            self.watch.enqueued()
        return created

    async def get_subscription(
        self, tenant: str, sub_id: str, *, kind: str | None = ENTITY_KIND
    ) -> dict[str, Any] | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT doc FROM subscriptions WHERE tenant = ? AND id = ?"
                " AND (? IS NULL OR kind = ?)",
                (tenant, sub_id, kind, kind),
            ).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def replace_subscription(
        self,
        tenant: str,
        sub: dict[str, Any],
        *,
        kind: str = ENTITY_KIND,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            _unpark_lane_of(conn, tenant, sub["id"])
            cur = conn.execute(
                "UPDATE subscriptions SET doc = ? WHERE tenant = ? AND id = ? AND kind = ?",
                (orjson.dumps(sub).decode(), tenant, sub["id"], kind),
            )
            if cur.rowcount != 1:
                return False
            # A new timeInterval (or one switched back on) starts its clock again.
            conn.execute(
                "UPDATE subscription_status SET next_periodic = NULL WHERE tenant = ? AND id = ?",
                (tenant, sub["id"]),
            )
            if outbox:
                _insert_outbox(conn, tenant, list(outbox))
            _bump_epoch(conn)
            return True

        replaced = await self.db.write(run)
        if replaced and outbox and self.watch is not None:
            self.watch.enqueued()
        return replaced

    async def delete_subscription(
        self, tenant: str, sub_id: str, *, kind: str = ENTITY_KIND
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            _unpark_lane_of(conn, tenant, sub_id)
            cur = conn.execute(
                "DELETE FROM subscriptions WHERE tenant = ? AND id = ? AND kind = ?",
                (tenant, sub_id, kind),
            )
            if cur.rowcount != 1:
                return False
            conn.execute(
                "DELETE FROM outbox WHERE tenant = ? AND subscription_id = ?", (tenant, sub_id)
            )
            conn.execute(
                "DELETE FROM subscription_status WHERE tenant = ? AND id = ?", (tenant, sub_id)
            )
            _bump_epoch(conn)
            return True

        return await self.db.write(run)

    async def list_subscriptions(
        self, tenant: str, limit: int, offset: int, *, kind: str = ENTITY_KIND
    ) -> tuple[list[dict[str, Any]], int]:
        def run(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            total = conn.execute(
                "SELECT count(*) FROM subscriptions WHERE tenant = ? AND kind = ?", (tenant, kind)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT doc FROM subscriptions WHERE tenant = ? AND kind = ?"
                " ORDER BY seq LIMIT ? OFFSET ?",
                (tenant, kind, limit, offset),
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows], total

        return await self.db.read(run)

    # -- context source registrations ---------------------------------------------------------

    async def get_registration(self, tenant: str, reg_id: str) -> dict[str, Any] | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT doc FROM csource_registrations WHERE tenant = ? AND id = ?",
                (tenant, reg_id),
            ).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def list_registrations(self, tenant: str) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT doc FROM csource_registrations WHERE tenant = ? ORDER BY seq", (tenant,)
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows]

        return await self.db.read(run)

    async def write_registration(
        self, tenant: str, reg_id: str, apply: RegistrationApply, match: RegistrationMatch
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        def run(conn: sqlite3.Connection) -> tuple[Any, Any, bool]:
            row = conn.execute(
                "SELECT doc FROM csource_registrations WHERE tenant = ? AND id = ?",
                (tenant, reg_id),
            ).fetchone()
            before = orjson.loads(row[0]) if row else None
            after = apply(before)
            if after is None:
                conn.execute(
                    "DELETE FROM csource_registrations WHERE tenant = ? AND id = ?",
                    (tenant, reg_id),
                )
            elif before is None:
                conn.execute(
                    "INSERT OR IGNORE INTO tenants(name, created_at) VALUES (?, ?)",
                    (tenant, datetime.now(UTC).isoformat()),
                )
                seq = conn.execute(
                    "SELECT coalesce(max(seq), 0) + 1 FROM csource_registrations"
                ).fetchone()[0]
                conn.execute(
                    "INSERT INTO csource_registrations(tenant, id, doc, seq) VALUES (?, ?, ?, ?)",
                    (tenant, reg_id, orjson.dumps(after).decode(), seq),
                )
            else:
                conn.execute(
                    "UPDATE csource_registrations SET doc = ? WHERE tenant = ? AND id = ?",
                    (orjson.dumps(after).decode(), tenant, reg_id),
                )
            subs = [
                orjson.loads(r[0])
                for r in conn.execute(
                    "SELECT doc FROM subscriptions WHERE tenant = ? AND kind = ? ORDER BY seq",
                    (tenant, CSOURCE_KIND),
                )
            ]
            entries = match(subs, before, after)
            if entries:
                _insert_outbox(conn, tenant, entries)
            return before, after, bool(entries)

        before, after, enqueued = await self.db.write(run)
        if enqueued and self.watch is not None:
            self.watch.enqueued()
        return before, after

    # -- notification delivery ------------------------------------------------------------------

    async def listen(self, topic: str, callback: Callable[[], None]) -> None:
        """One process per SQLite file: its own commits wake it directly (ChangeWatch)."""

    async def claim_lanes(self, owner: str, now: float, lease: float) -> list[str]:
        rows = await self.db.write(
            lambda c: c.execute(
                "UPDATE delivery_lanes SET owner = ?, lease_until = ?"
                " WHERE (owner IS NULL OR lease_until < ?) AND retry_at <= ?"
                " AND EXISTS (SELECT 1 FROM outbox o WHERE o.lane = delivery_lanes.lane)"
                " RETURNING lane",
                (owner, now + lease, now, now),
            ).fetchall()
        )
        return [r[0] for r in rows]

    async def lane_items(self, lane: str, limit: int) -> list[OutboxItem]:
        rows = self.db.read_now(
            lambda c: c.execute(
                "SELECT seq, tenant, subscription_id, created_at, attempts, body FROM outbox"
                " WHERE lane = ? ORDER BY seq LIMIT ?",
                (lane, limit),
            ).fetchall()
        )
        return [OutboxItem(r[0], r[1], r[2], r[3], r[4], orjson.loads(r[5])) for r in rows]

    async def record_attempt(self, tenant: str, subscription_id: str, at: str) -> None:
        row = attempt_row(tenant, subscription_id, at)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(_STATUS_UPSERT, row)

        await self.db.write(run)

    async def settle(
        self, lane: str, owner: str, outcomes: list[Outcome], lease_until: float
    ) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE delivery_lanes SET lease_until = ?, failures = 0"
                " WHERE lane = ? AND owner = ?",
                (lease_until, lane, owner),
            )
            if cur.rowcount != 1:
                return False
            conn.executemany("DELETE FROM outbox WHERE seq = ?", [(o.item.seq,) for o in outcomes])
            conn.executemany(_STATUS_UPSERT, status_rows(outcomes))
            return True

        return await self.db.write(run)

    async def defer_lane(
        self, lane: str, owner: str, item: OutboxItem, at: str, retry_at: float
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?", (item.seq,))
            conn.execute(
                "UPDATE delivery_lanes SET owner = NULL, retry_at = ?, failures = failures + 1"
                " WHERE lane = ? AND owner = ?",
                (retry_at, lane, owner),
            )
            conn.executemany(_STATUS_UPSERT, status_rows([Outcome(item, "failed", at)]))

        await self.db.write(run)

    async def release_lane(self, lane: str, owner: str) -> None:
        await self.db.write(
            lambda c: (
                c.execute(
                    "UPDATE delivery_lanes SET owner = NULL WHERE lane = ? AND owner = ?",
                    (lane, owner),
                ).rowcount
            )
        )

    async def notification_status(self, tenant: str, ids: list[str]) -> dict[str, dict]:
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = self.db.read_now(
            lambda c: c.execute(
                "SELECT id, times_sent, times_failed, last_notification, last_success,"
                f" last_failure FROM subscription_status WHERE tenant = ? AND id IN ({marks})",
                (tenant, *ids),
            ).fetchall()
        )
        return {r[0]: status_info(r[1:]) for r in rows}

    async def claim_periodic(
        self, now: float, *, kind: str = ENTITY_KIND
    ) -> list[tuple[str, dict[str, Any]]]:
        def run(conn: sqlite3.Connection) -> list[tuple[str, dict[str, Any]]]:
            due = conn.execute(
                "SELECT s.tenant, s.doc FROM subscriptions s LEFT JOIN subscription_status st"
                " ON st.tenant = s.tenant AND st.id = s.id"
                " WHERE json_extract(s.doc, '$.timeInterval') IS NOT NULL AND s.kind = ?"
                " AND coalesce(st.next_periodic, 0) <= ?",
                (kind, now),
            ).fetchall()
            taken = []
            for tenant, doc in due:
                sub = orjson.loads(doc)
                conn.execute(
                    "INSERT INTO subscription_status(tenant, id, next_periodic) VALUES (?, ?, ?)"
                    " ON CONFLICT (tenant, id) DO UPDATE SET next_periodic = excluded.next_periodic",
                    (tenant, sub["id"], now + float(sub["timeInterval"])),
                )
                taken.append((tenant, sub))
            return taken

        return await self.db.write(run)

    async def enqueue(self, tenant: str, entries: list[OutboxEntry]) -> None:
        if not entries:
            return
        await self.db.write(lambda c: _insert_outbox(c, tenant, entries))
        if self.watch is not None:
            self.watch.enqueued()

    # -- stored @contexts (§5.13) ------------------------------------------------------------

    async def context_entries(self) -> list[dict[str, Any]]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT local_id, info, hits, last_used FROM hosted_contexts"
            ).fetchall()
        )
        return [
            {"local_id": r[0], "info": orjson.loads(r[1]), "hits": r[2], "last_used": r[3]}
            for r in rows
        ]

    async def context_bodies(self, local_ids: Sequence[str]) -> dict[str, Any]:
        ids = list(local_ids)
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT local_id, body FROM hosted_contexts WHERE local_id IN"
                " (SELECT value FROM json_each(?))",
                (orjson.dumps(ids),),
            ).fetchall()
        )
        return {r[0]: orjson.loads(r[1]) for r in rows}

    async def save_context(self, local_id: str, info: dict[str, Any], body: Any) -> None:
        row = (local_id, orjson.dumps(info, default=str), orjson.dumps(body))

        def save(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO hosted_contexts(local_id, info, body) VALUES (?, ?, ?)"
                " ON CONFLICT (local_id) DO UPDATE SET info = excluded.info, body = excluded.body",
                row,
            )

        await self.db.write(save)

    async def delete_context(self, local_id: str) -> None:
        def delete(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM hosted_contexts WHERE local_id = ?", (local_id,))

        await self.db.write(delete)

    async def add_context_usage(self, usage: Sequence[tuple[str, int, str]]) -> None:
        rows = [(hits, last_used, local_id) for local_id, hits, last_used in usage]

        def add(c: sqlite3.Connection) -> None:
            c.executemany(
                "UPDATE hosted_contexts SET hits = hits + ?,"
                " last_used = max(coalesce(last_used, ''), ?) WHERE local_id = ?",
                rows,
            )

        if rows:
            await self.db.write(add)


_STATUS_UPSERT = (
    "INSERT INTO subscription_status(tenant, id, times_sent, times_failed, last_notification,"
    " last_success, last_failure) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, id) DO UPDATE"
    " SET times_sent = times_sent + excluded.times_sent,"
    " times_failed = times_failed + excluded.times_failed,"
    " last_notification = coalesce(excluded.last_notification, last_notification),"
    " last_success = coalesce(excluded.last_success, last_success),"
    " last_failure = coalesce(excluded.last_failure, last_failure)"
)


def _unpark_lane_of(conn: sqlite3.Connection, tenant: str, sub_id: str) -> None:
    """A subscription changed or deleted may have been what kept its endpoint's lane waiting
    to retry (store/outbox.py UNPARK_LANE)."""
    conn.execute(UNPARK_LANE_SQLITE, (tenant, sub_id))


def _bump_epoch(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE subscription_epoch SET epoch = epoch + 1")


def _insert_outbox(conn: sqlite3.Connection, tenant: str, entries: list[OutboxEntry]) -> None:
    at = time.time()
    conn.executemany(
        "INSERT INTO outbox(lane, tenant, subscription_id, created_at, body)"
        " VALUES (?, ?, ?, ?, ?)",
        [(lane, tenant, sub_id, at, body.decode()) for lane, sub_id, body in entries],
    )
    conn.executemany(
        "INSERT OR IGNORE INTO delivery_lanes(lane) VALUES (?)",
        [(lane,) for lane in {e[0] for e in entries}],
    )


def _watching(conn: sqlite3.Connection, store: SqliteStore, tenant: str) -> list[Any]:
    """The tenant's compiled subscriptions, recompiled when the epoch read in this transaction
    differs from the one they were compiled at."""
    assert store.watch is not None
    (epoch,) = conn.execute("SELECT epoch FROM subscription_epoch").fetchone()
    if epoch != store.watching[0]:
        by_tenant: dict[str, list[Any]] = {}
        for t, doc in conn.execute(
            "SELECT tenant, doc FROM subscriptions WHERE kind = ? ORDER BY seq", (ENTITY_KIND,)
        ):
            compiled = store.watch.compile(orjson.loads(doc))
            if compiled is not None:
                by_tenant.setdefault(t, []).append(compiled)
        store.watching = (epoch, by_tenant)
    return store.watching[1].get(tenant, [])


def _deleted_type_sql(expr: TypeExpr, params: list[Any]) -> str:
    if isinstance(expr, str):
        params.append(expr)
        return "EXISTS (SELECT 1 FROM json_each(d.types) j WHERE j.value = ?)"
    op, parts = expr
    joiner = " AND " if op == "and" else " OR "
    return "(" + joiner.join(_deleted_type_sql(p, params) for p in parts) + ")"


def _geometries(doc: Entity) -> list[tuple[str, Any]]:
    """(attribute, GeoJSON value) of every GeoProperty instance of an entity, in order."""
    return [
        (attr, inst["value"])
        for attr, instances in doc["attrs"].items()
        for inst in instances
        if inst["type"] == "GeoProperty"
    ]


def _settled(conn: sqlite3.Connection) -> sqlite3.Connection:
    """The connection, once history_recent is merged (before a change to attr_history's rows)."""
    merge_recent(conn)
    return conn


def _write_batch(
    conn: sqlite3.Connection, tenant: str, ops: Sequence[WriteOp], store: SqliteStore
) -> tuple[list[Any], bool]:
    """Apply every op in memory first (an op that raises changes nothing), then write all the
    survivors' rows with a handful of executemany calls: per-row statements would cost more than
    everything else in a batch upsert. Returns the per-op results and whether notifications
    were enqueued."""
    history = store.keep_history
    history_after_delete = store.history_after_delete
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
    # Rewrite the derived rows of the entities whose state changed, where they changed: a
    # device's update changes values, seldom its types or its place (type rows and the R*Tree
    # are B-trees of their own, each rewrite dirtying pages of its own).
    retyped: set[str] = set()
    moved: dict[str, list[tuple[str, Any]]] = {}  # entity id -> its new geometries
    for eid in applied.changed:
        doc = applied.after[eid]
        old = stored.get(eid)
        if old is None or doc is None or doc["type"] != old["type"]:
            retyped.add(eid)
        geometries = _geometries(doc) if doc else []
        if (_geometries(old) if old else []) != geometries:
            moved[eid] = geometries
    for rewritten, statements in (
        (retyped, ("DELETE FROM entity_types WHERE rid IN ({marks})",)),
        (
            moved,
            (
                "DELETE FROM geo_index WHERE gid IN"
                " (SELECT gid FROM geo_rows WHERE rid IN ({marks}))",
                "DELETE FROM geo_rows WHERE rid IN ({marks})",
            ),
        ),
    ):
        old_rids = [rids[eid] for eid in rewritten if eid in rids]
        for start in range(0, len(old_rids), 500):
            chunk = old_rids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for statement in statements:
                conn.execute(statement.format(marks=marks), chunk)
    # One writer holds the write lock, so ids taken from max() cannot collide.
    next_rid = (conn.execute("SELECT max(rid) FROM entities").fetchone()[0] or 0) + 1
    next_gid = (conn.execute("SELECT max(gid) FROM geo_rows").fetchone()[0] or 0) + 1
    inserts: list[tuple] = []
    updates: list[tuple] = []
    deletes: list[tuple] = []
    type_rows: list[tuple] = []
    forgotten: list[tuple[str, str]] = []
    tombstones: list[tuple[str, str, str, str]] = []
    deleted_at = now_iso()
    geo_rows: list[tuple] = []
    geo_boxes: list[tuple] = []
    for eid in applied.changed:
        rid: int | None = rids.get(eid)
        doc = applied.after[eid]
        if history and doc is None:
            if not history_after_delete:  # by default an entity's history goes with it
                forgotten.append((tenant, eid))
            elif eid in stored:  # kept: remember what the entity was
                types = orjson.dumps(stored[eid]["type"]).decode()
                tombstones.append((tenant, eid, types, deleted_at))
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
        if eid in retyped:
            type_rows.extend((tenant, t, rid) for t in doc["type"])
        for attr, value in moved.get(eid, ()):
            try:
                box = geometry_bbox(value)
            except Exception as exc:
                # Validated on the way in; a value we cannot box is not indexed (the value
                # itself is not logged: it may be where someone is).
                log.warning("a geometry of %s is not indexed: %s", attr, type(exc).__name__)
                continue
            geo_rows.append((next_gid, tenant, rid, attr, orjson.dumps(value).decode()))
            geo_boxes.append((next_gid, box[0], box[2], box[1], box[3]))
            next_gid += 1
    history_rows = store.series.changes(conn, tenant, applied.history_steps()) if history else []
    conn.executemany("DELETE FROM entities WHERE rid = ?", deletes)
    conn.executemany("UPDATE entities SET doc = ? WHERE rid = ?", updates)
    conn.executemany("INSERT INTO entities(rid, tenant, id, doc) VALUES (?, ?, ?, ?)", inserts)
    conn.executemany("INSERT INTO entity_types(tenant, type, rid) VALUES (?, ?, ?)", type_rows)
    counted = [(tenant, *key, n) for key, n in applied.stats().items() if n]
    if counted:  # a device's update changes none: no scan of the tenant's counters
        conn.executemany(
            "INSERT INTO attr_stats VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE"
            " SET instances = instances + excluded.instances",
            counted,
        )
        conn.execute("DELETE FROM attr_stats WHERE tenant = ? AND instances <= 0", (tenant,))
    conn.executemany(
        "INSERT INTO geo_rows(gid, tenant, rid, attr, geometry) VALUES (?, ?, ?, ?, ?)", geo_rows
    )
    conn.executemany("INSERT INTO geo_index VALUES (?, ?, ?, ?, ?)", geo_boxes)
    if forgotten:
        store.series.forget_entities(_settled(conn), forgotten)
    conn.executemany("DELETE FROM deleted_entities WHERE tenant = ? AND id = ?", forgotten)
    conn.executemany("INSERT OR REPLACE INTO deleted_entities VALUES (?, ?, ?, ?)", tombstones)
    if history_rows:
        conn.executemany(INSERT_RECENT, history_rows)
        store.recent_rows += len(history_rows)
        if store.recent_rows >= RECENT_MERGE_ROWS:
            merge_recent(conn)
            store.recent_rows = 0
    entries: list[OutboxEntry] = []
    if store.watch is not None and applied.changed:
        watching = _watching(conn, store, tenant)
        if watching:
            entries = applied.notifications(store.watch, watching)
            if entries:
                _insert_outbox(conn, tenant, entries)
    return applied.results, bool(entries)


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
    # With orderBy every match is needed: SQL then orders them (below).
    wanted = None if query.count or query.order else query.offset + query.limit
    matched: list[Entity] = []
    seen: set[int] = set()
    kept: set[int] = set()  # the rids of matched
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
        if query.scope is not None and not evaluate_scope(query.scope, entity):
            continue
        matched.append(entity)
        kept.add(rid)
        if wanted is not None and len(matched) >= wanted:
            break
    count = len(matched) if query.count else None
    if query.order and query.limit > 0:
        rids = orjson.dumps(sorted(kept)).decode()
        select = _ordered_sql(query, "entities e", "e.rid IN (SELECT value FROM json_each(?))")
        rows = conn.execute(select, [rids, query.limit, query.offset]).fetchall()
        return QueryResult([orjson.loads(r[0]) for r in rows], count)
    page = matched[query.offset : query.offset + query.limit]
    return QueryResult(page, count)


def _ordered_sql(query: EntityQuery, source: str, clause: str) -> str:
    """The page of a query with orderBy (§4.23): its keys computed once per matching entity
    (materialized CTEs, store/sqlite/order.py), sorted in SQL, then by creation (rid), then
    LIMIT ? OFFSET ?."""
    (first, second, third), terms = order_sqlite(query.order, "e.doc", query.collation)
    return (
        f"WITH m1 AS MATERIALIZED (SELECT e.rid AS rid, {', '.join(first)}"
        f" FROM {source} WHERE {clause}),"
        f" m2 AS MATERIALIZED (SELECT rid, {', '.join(second)} FROM m1),"
        f" m3 AS MATERIALIZED (SELECT rid, {', '.join(third)} FROM m2)"
        f" SELECT e.doc FROM m3 JOIN entities e ON e.rid = m3.rid"
        f" ORDER BY {', '.join(terms)}, m3.rid LIMIT ? OFFSET ?"
    )


def _limit(query: HistoryQuery) -> str:
    return "" if query.limit is None else f" LIMIT {int(query.limit)}"
