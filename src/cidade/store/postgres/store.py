"""PostgresStore: the Store interface on PostgreSQL 15 + PostGIS 3 (asyncpg).

Writes: one transaction per ``write`` call; the entities it touches are locked first (a
transaction-level advisory lock per tenant+id, taken in a fixed order so two workers never
deadlock, and covering ids that do not exist yet), then every op is applied in memory exactly as
on SQLite, and the rows are written with a few array statements.
Geo-queries: PostGIS on the GiST indexes — geodesic distances on the WGS84 spheroid through
``geography``, topological relations on lon/lat ``geometry`` (as shapely does on SQLite).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from cidade.hub.errors import BadRequestData
from cidade.hub.query.geo import GeoQuery
from cidade.hub.query.postgres_q import to_postgres
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
from cidade.store.postgres.migrations import migrate

PARTITION_LOCK = 0x43494442  # serialises creation of history partitions across workers

TOPOLOGY = {
    "within": "ST_Within",
    "contains": "ST_Contains",
    "intersects": "ST_Intersects",
    "equals": "ST_Equals",
    "disjoint": "ST_Disjoint",
    "overlaps": "ST_Overlaps",
}


def parse_url(url: str) -> tuple[str, dict[str, str], str | None]:
    """The DSN for asyncpg, server settings, and Cidade's own ``?schema=NAME``, which puts every
    table in that schema (one database, several isolated deployments or test runs)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
    dsn = urllib.parse.urlunsplit(parts._replace(query=rest))
    # JIT off: PostgreSQL estimates 100 rows per jsonb_array_elements, so q queries over a few
    # thousand entities look expensive enough to JIT-compile, which takes longer than running them.
    settings = {"jit": "off"}
    if schema:
        settings["search_path"] = f'"{schema}", public'
    return dsn, settings, schema


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
        format="text",
    )


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        min_size: int = 2,
        max_size: int = 10,
        history: bool = True,
        history_after_delete: bool = False,
    ) -> None:
        self.url = url
        self.dsn, self.server_settings, self.schema = parse_url(url)
        self.min_size = min_size
        self.max_size = max_size
        self.pool: asyncpg.Pool | None = None
        self.keep_history = history  # keep every change of every attribute (the temporal API)
        self.history_after_delete = history_after_delete
        # Months whose history partition this process has seen exist. Partitions are only ever
        # dropped by retention; a write that finds one gone clears this and retries.
        self._partitions: set[str] = set()

    async def open(self) -> None:
        conn = await asyncpg.connect(self.dsn, server_settings=self.server_settings)
        try:
            if self.schema:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            await migrate(conn)
        finally:
            await conn.close()
        self.pool = await asyncpg.create_pool(
            self.dsn,
            min_size=self.min_size,
            max_size=self.max_size,
            server_settings=self.server_settings,
            init=_init_connection,
        )

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()
            self.pool = None

    @property
    def _pool(self) -> asyncpg.Pool:
        assert self.pool is not None, "the store is not open"
        return self.pool

    # -- tenants --------------------------------------------------------------------------------

    async def tenant_exists(self, tenant: str) -> bool:
        if tenant == "":
            return True
        return await self._pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM tenants WHERE name = $1)", tenant
        )

    # -- entities -------------------------------------------------------------------------------

    async def get_entity(self, tenant: str, entity_id: str) -> Entity | None:
        return await self._pool.fetchval(
            "SELECT doc FROM entities WHERE tenant = $1 AND id = $2", tenant, entity_id
        )

    async def write(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    return await _write_batch(conn, tenant, ops, self)
            except asyncpg.CheckViolationError as exc:
                # "no partition of relation attr_history found for row": a month this process
                # believed existed was dropped (retention) by another; forget and retry once.
                if attempt == 2 or "partition" not in str(exc):
                    raise
                self._partitions.clear()
        raise AssertionError("unreachable")

    async def ensure_partitions(self, conn: asyncpg.Connection, months: set[str]) -> None:
        """Create the monthly history partitions these months need (YYYY-MM), once."""
        missing = sorted(months - self._partitions)
        if not missing:
            return
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
        for month in missing:
            start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            end = (start + timedelta(days=32)).replace(day=1)
            name = f"attr_history_{start:%Y_%m}"
            await conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF attr_history'
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )
        self._partitions.update(missing)

    async def query(self, tenant: str, query: EntityQuery) -> QueryResult:
        where = ["e.tenant = $1"]
        params: list[Any] = [tenant]

        def bind(value: Any, cast: str = "") -> str:
            params.append(value)
            return f"${len(params)}{cast}"

        if query.types is not None:
            where.append(_type_sql(query.types, bind))
        if query.ids:
            where.append(f"e.id = ANY({bind(list(query.ids), '::text[]')})")
        if query.id_pattern is not None:
            where.append(f"e.id ~ {bind(query.id_pattern, '::text')}")
        if query.attrs:
            where.append(f"(e.doc -> 'attrs') ?| {bind(list(query.attrs), '::text[]')}")
        if query.q is not None:
            sql, qparams = to_postgres(query.q, "e.doc", len(params) + 1)
            where.append(sql)
            params.extend(qparams)
        if query.geo is not None:
            where.append(_geo_sql(query.geo, bind))
        clause = " AND ".join(where)
        try:
            return await self._run_query(clause, params, query)
        except asyncpg.InvalidRegularExpressionError as exc:
            raise BadRequestData(f"the regular expression cannot be used: {exc}") from None

    async def _run_query(self, clause: str, params: list[Any], query: EntityQuery) -> QueryResult:
        async with self._pool.acquire() as conn:
            count = None
            if query.count:
                count = await conn.fetchval(
                    f"SELECT count(*) FROM entities e WHERE {clause}", *params
                )
            if query.limit == 0:
                return QueryResult([], count)
            rows = await conn.fetch(
                f"SELECT e.doc FROM entities e WHERE {clause} ORDER BY e.rid"
                f" LIMIT {int(query.limit)} OFFSET {int(query.offset)}",
                *params,
            )
        return QueryResult([r["doc"] for r in rows], count)

    # -- discovery ------------------------------------------------------------------------------

    async def entity_types(self, tenant: str) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT type, attr, kind, instances FROM attr_stats WHERE tenant = $1 AND type != ''",
            tenant,
        )
        found: dict[str, dict[str, Any]] = {}
        for r in rows:
            item = found.setdefault(r["type"], {"type": r["type"], "count": 0, "attrs": {}})
            if r["attr"] == "":
                item["count"] = r["instances"]
            else:
                item["attrs"].setdefault(r["attr"], set()).add(r["kind"])
        return [found[t] for t in sorted(found) if found[t]["count"] > 0]

    async def attributes(self, tenant: str) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT type, attr, kind, instances FROM attr_stats WHERE tenant = $1 AND attr != ''",
            tenant,
        )
        info: dict[str, dict[str, Any]] = {}
        for r in rows:
            item = info.setdefault(
                r["attr"], {"attr": r["attr"], "kinds": set(), "types": set(), "count": 0}
            )
            if r["type"] == "":
                item["kinds"].add(r["kind"])
                item["count"] += r["instances"]
            else:
                item["types"].add(r["type"])
        return [info[a] for a in sorted(info)]

    # -- history --------------------------------------------------------------------------------

    async def history(
        self, tenant: str, query: HistoryQuery
    ) -> dict[str, dict[str, list[dict[str, Any]]]]:
        if not query.entity_ids:
            return {}
        column = TIME_COLUMNS[query.time_property]
        params: list[Any] = [tenant]
        where = ["tenant = $1"]

        def among(name: str, values: Sequence[str]) -> str:
            # One value: "=", so each partition's (tenant, entity_id, attr, time) index hands the
            # rows over in time order (an ordered Append, no sort); "= ANY" cannot.
            params.append(values[0] if len(values) == 1 else list(values))
            if len(values) == 1:
                return f"{name} = ${len(params)}"
            return f"{name} = ANY(${len(params)}::text[])"

        where.append(among("entity_id", query.entity_ids))
        if query.attrs:
            where.append(among("attr", query.attrs))
        if query.after is not None:
            params.append(_ts(query.after))
            where.append(f"{column} {'>=' if query.after_inclusive else '>'} ${len(params)}")
        if query.before is not None:
            params.append(_ts(query.before))
            where.append(f"{column} {'<=' if query.before_inclusive else '<'} ${len(params)}")
        found = f"FROM attr_history WHERE {' AND '.join(where)}"
        if query.last_n is not None:
            found = (
                f"FROM (SELECT *, row_number() OVER (PARTITION BY entity_id, attr, dataset_id"
                f" ORDER BY {column} DESC, instance_id DESC) AS back {found}) h"
                f" WHERE back <= {int(query.last_n)}"
            )
        # No window without lastN: it sorted every row, instance JSON and all (spilling to disk
        # for a year of 15-minute readings). Times come formatted in the stored format: turning
        # 35,040 datetimes into strings in Python took longer than the query. An entity id or
        # attribute that every row shares is not read back for each row.
        one_id = query.entity_ids[0] if len(query.entity_ids) == 1 else None
        one_attr = query.attrs[0] if query.attrs and len(query.attrs) == 1 else None
        sql = (
            f"SELECT {'NULL' if one_id else 'entity_id'}, {'NULL' if one_attr else 'attr'},"
            " instance_id, instance,"
            f" to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            f" {found} ORDER BY entity_id, attr, {column}, instance_id"
        )
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for eid, attr, iid, item, t in await self._pool.fetch(sql, *params):
            item["instanceId"] = iid
            item["_t"] = t
            out.setdefault(eid or one_id, {}).setdefault(attr or one_attr, []).append(item)
        return out

    async def add_history(self, tenant: str, entity_id: str, rows: list[HistoryRow]) -> None:
        """Append instances to an entity's history (the temporal API's own writes)."""
        async with self._pool.acquire() as conn, conn.transaction():
            await _insert_history(conn, self, tenant, [(entity_id, *r) for r in rows])

    async def delete_history(
        self, tenant: str, entity_id: str, attr: str, dataset_id: str | None, every: bool
    ) -> int:
        """Forget an attribute's history: one datasetId's ("" = the default) or all of it."""
        sql = "DELETE FROM attr_history WHERE tenant = $1 AND entity_id = $2 AND attr = $3"
        params: list[Any] = [tenant, entity_id, attr]
        if not every:
            sql += " AND dataset_id = $4"
            params.append(dataset_id or "")
        status = await self._pool.execute(sql, *params)
        return int(status.split()[-1])

    async def replace_history_instance(
        self, tenant: str, entity_id: str, attr: str, row: HistoryRow
    ) -> bool:
        """Replace one instance (found by its instanceId); False when there is none. Delete and
        insert, since its new time may belong to another month's partition."""
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "DELETE FROM attr_history WHERE tenant = $1 AND entity_id = $2 AND attr = $3"
                " AND instance_id = $4",
                tenant,
                entity_id,
                attr,
                row[2],
            )
            if status.split()[-1] == "0":
                return False
            await _insert_history(conn, self, tenant, [(entity_id, *row)])
            return True

    async def delete_history_instance(
        self, tenant: str, entity_id: str, attr: str, instance_id: str
    ) -> bool:
        status = await self._pool.execute(
            "DELETE FROM attr_history WHERE tenant = $1 AND entity_id = $2 AND attr = $3"
            " AND instance_id = $4",
            tenant,
            entity_id,
            attr,
            instance_id,
        )
        return status.split()[-1] != "0"

    # -- subscriptions --------------------------------------------------------------------------

    async def create_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        """Store a new subscription; False when one with its id exists in the tenant."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tenants(name) VALUES ($1) ON CONFLICT DO NOTHING", tenant
            )
            status = await conn.execute(
                "INSERT INTO subscriptions(tenant, id, doc) VALUES ($1, $2, $3::text::jsonb)"
                " ON CONFLICT DO NOTHING",
                tenant,
                sub["id"],
                orjson.dumps(sub).decode(),
            )
        return status.split()[-1] == "1"

    async def get_subscription(self, tenant: str, sub_id: str) -> dict[str, Any] | None:
        return await self._pool.fetchval(
            "SELECT doc FROM subscriptions WHERE tenant = $1 AND id = $2", tenant, sub_id
        )

    async def replace_subscription(self, tenant: str, sub: dict[str, Any]) -> bool:
        status = await self._pool.execute(
            "UPDATE subscriptions SET doc = $3::text::jsonb WHERE tenant = $1 AND id = $2",
            tenant,
            sub["id"],
            orjson.dumps(sub).decode(),
        )
        return status.split()[-1] == "1"

    async def delete_subscription(self, tenant: str, sub_id: str) -> bool:
        status = await self._pool.execute(
            "DELETE FROM subscriptions WHERE tenant = $1 AND id = $2", tenant, sub_id
        )
        return status.split()[-1] == "1"

    async def list_subscriptions(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._pool.acquire() as conn:
            total = await conn.fetchval(
                "SELECT count(*) FROM subscriptions WHERE tenant = $1", tenant
            )
            rows = await conn.fetch(
                "SELECT doc FROM subscriptions WHERE tenant = $1 ORDER BY seq"
                f" LIMIT {int(limit)} OFFSET {int(offset)}",
                tenant,
            )
        return [r["doc"] for r in rows], total

    # -- hosted @contexts -----------------------------------------------------------------------

    async def hosted_contexts(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT local_id, info, body FROM hosted_contexts")
        return [{"local_id": r["local_id"], "info": r["info"], "body": r["body"]} for r in rows]

    async def save_hosted_context(self, local_id: str, info: dict[str, Any], body: Any) -> None:
        await self._pool.execute(
            "INSERT INTO hosted_contexts VALUES ($1, $2, $3) ON CONFLICT (local_id)"
            " DO UPDATE SET info = excluded.info, body = excluded.body",
            local_id,
            orjson.loads(orjson.dumps(info, default=str)),
            body,
        )

    async def delete_hosted_context(self, local_id: str) -> None:
        await self._pool.execute("DELETE FROM hosted_contexts WHERE local_id = $1", local_id)


def _type_sql(expr: TypeExpr, bind: Any) -> str:
    if isinstance(expr, str):
        return f"e.types @> ARRAY[{bind(expr, '::text')}]"
    op, parts = expr
    joiner = " AND " if op == "and" else " OR "
    return "(" + joiner.join(_type_sql(p, bind) for p in parts) + ")"


def _geo_sql(geo: GeoQuery, bind: Any) -> str:
    shape = bind(
        orjson.dumps({"type": geo.geometry, "coordinates": geo.as_geoq()["coordinates"]}).decode(),
        "::text",
    )
    query_geom = f"ST_SetSRID(ST_GeomFromGeoJSON({shape}), 4326)"
    if geo.georel == "near":
        if geo.max_distance is not None:
            pred = f"ST_DWithin(g.geom::geography, {query_geom}::geography, {bind(geo.max_distance, '::float8')})"
        else:
            pred = f"NOT ST_DWithin(g.geom::geography, {query_geom}::geography, {bind(geo.min_distance, '::float8')})"
    else:
        pred = f"{TOPOLOGY[geo.georel]}(g.geom, {query_geom})"
    return (
        f"EXISTS (SELECT 1 FROM geo_rows g WHERE g.rid = e.rid"
        f" AND g.attr = {bind(geo.geoproperty, '::text')} AND {pred})"
    )


async def _write_batch(
    conn: asyncpg.Connection, tenant: str, ops: Sequence[WriteOp], store: PostgresStore
) -> list[Any]:
    await conn.execute("INSERT INTO tenants(name) VALUES ($1) ON CONFLICT DO NOTHING", tenant)
    ids = list(dict.fromkeys(op.entity_id for op in ops))
    # Lock every entity this call touches, existing or not, in one fixed order.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT"
        " hashtextextended($1 || chr(31) || i, 0) AS h FROM unnest($2::text[]) AS i ORDER BY h) s",
        tenant,
        ids,
    )
    rids: dict[str, int] = {}
    stored: dict[str, Entity] = {}
    for r in await conn.fetch(
        "SELECT rid, id, doc FROM entities WHERE tenant = $1 AND id = ANY($2::text[])",
        tenant,
        ids,
    ):
        rids[r["id"]] = r["rid"]
        stored[r["id"]] = r["doc"]
    applied = apply_ops(ops, stored)
    history_rows: list[tuple] = []
    forgotten: list[str] = []
    deletes: list[int] = []
    updates: list[tuple[int, list[str], Entity]] = []
    inserts: list[tuple[str, list[str], Entity]] = []
    for eid in applied.changed:
        rid = rids.get(eid)
        doc = applied.after[eid]
        if store.keep_history:
            if doc is None:
                if not store.history_after_delete:  # by default an entity's history goes with it
                    forgotten.append(eid)
            else:
                history_rows.extend((eid, *row) for row in changed_instances(stored.get(eid), doc))
        if doc is None:
            if rid is not None:
                deletes.append(rid)
            continue
        if rid is None:
            inserts.append((eid, doc["type"], doc))
        else:
            updates.append((rid, doc["type"], doc))
    if deletes:
        await conn.execute("DELETE FROM entities WHERE rid = ANY($1::bigint[])", deletes)
    written: list[tuple[int, Entity]] = []
    if updates:
        await conn.execute(
            "UPDATE entities e SET doc = u.doc::jsonb, types = u.types::text[]"
            " FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(rid, doc, types)"
            " WHERE e.rid = u.rid",
            [u[0] for u in updates],
            [orjson.dumps(u[2]).decode() for u in updates],
            [_pg_array(u[1]) for u in updates],
        )
        await conn.execute(
            "DELETE FROM geo_rows WHERE rid = ANY($1::bigint[])", [u[0] for u in updates]
        )
        written.extend((u[0], u[2]) for u in updates)
    if inserts:
        rows = await conn.fetch(
            "INSERT INTO entities(tenant, id, types, doc)"
            " SELECT $1, u.id, u.types::text[], u.doc::jsonb"
            " FROM unnest($2::text[], $3::text[], $4::text[]) AS u(id, doc, types)"
            " RETURNING rid, id",
            tenant,
            [i[0] for i in inserts],
            [orjson.dumps(i[2]).decode() for i in inserts],
            [_pg_array(i[1]) for i in inserts],
        )
        rids = {r["id"]: r["rid"] for r in rows}
        written.extend((rids[i[0]], i[2]) for i in inserts)
    geo_rids, geo_attrs, geo_values = [], [], []
    for rid, doc in written:
        for attr, instances in doc["attrs"].items():
            for inst in instances:
                if inst["type"] == "GeoProperty":
                    geo_rids.append(rid)
                    geo_attrs.append(attr)
                    geo_values.append(orjson.dumps(inst["value"]).decode())
    if geo_rids:
        await conn.execute(
            "INSERT INTO geo_rows(tenant, rid, attr, geom)"
            " SELECT $1, u.rid, u.attr, ST_SetSRID(ST_GeomFromGeoJSON(u.g), 4326)"
            " FROM unnest($2::bigint[], $3::text[], $4::text[]) AS u(rid, attr, g)",
            tenant,
            geo_rids,
            geo_attrs,
            geo_values,
        )
    deltas = [(key, n) for key, n in applied.stats().items() if n]
    if deltas:
        await conn.execute(
            "INSERT INTO attr_stats SELECT $1, u.t, u.a, u.k, u.n"
            " FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS u(t, a, k, n)"
            " ON CONFLICT (tenant, type, attr, kind)"
            " DO UPDATE SET instances = attr_stats.instances + excluded.instances",
            tenant,
            [k[0] for k, _ in deltas],
            [k[1] for k, _ in deltas],
            [k[2] for k, _ in deltas],
            [n for _, n in deltas],
        )
        await conn.execute("DELETE FROM attr_stats WHERE tenant = $1 AND instances <= 0", tenant)
    if forgotten:
        await conn.execute(
            "DELETE FROM attr_history WHERE tenant = $1 AND entity_id = ANY($2::text[])",
            tenant,
            forgotten,
        )
    if history_rows:
        await _insert_history(conn, store, tenant, history_rows)
    return applied.results


async def _insert_history(
    conn: asyncpg.Connection, store: PostgresStore, tenant: str, rows: list[tuple]
) -> None:
    """rows: (entity id, *HistoryRow)."""
    await store.ensure_partitions(conn, {r[4][:7] for r in rows})
    await conn.execute(
        "INSERT INTO attr_history(tenant, entity_id, attr, dataset_id, instance_id, time,"
        " observed_at, modified_at, created_at, instance)"
        " SELECT $1, u.e, u.a, u.d, u.i, u.t, u.o, u.m, u.c, u.inst::jsonb FROM unnest("
        "$2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],"
        " $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::text[])"
        " AS u(e, a, d, i, t, o, m, c, inst)",
        tenant,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [_ts(r[4]) for r in rows],
        [_ts(r[5]) for r in rows],
        [_ts(r[6]) for r in rows],
        [_ts(r[7]) for r in rows],
        [orjson.dumps(r[8]).decode() for r in rows],
    )


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _pg_array(items: list[str]) -> str:
    """A text[] literal: unnest() cannot take a 2-D array of ragged type lists."""
    return (
        "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"
    )
