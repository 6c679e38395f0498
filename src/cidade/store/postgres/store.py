"""PostgresStore: the Store interface on PostgreSQL 15 + PostGIS 3 (asyncpg).

Writes: one transaction per ``write`` call; the entities it touches are locked first (a
transaction-level advisory lock per tenant+id, taken in a fixed order so two workers never
deadlock, and covering ids that do not exist yet), then every op is applied in memory exactly as
on SQLite, and the rows are written with a few array statements.
Geo-queries: PostGIS on the GiST indexes — geodesic distances on the WGS84 spheroid through
``geography``, topological relations on lon/lat ``geometry`` (as shapely does on SQLite).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import urllib.parse
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from cidade.ngsild.errors import BadRequestData
from cidade.ngsild.query.geo import GeoQuery
from cidade.ngsild.timefmt import from_datetime
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
from cidade.store.history import (
    HistoryRow,
    history_source,
    numeric_value,
    value_item,
)
from cidade.store.outbox import UNPARK_LANE_POSTGRES, attempt_row, status_info, status_rows
from cidade.store.postgres.auth import PostgresAuth
from cidade.store.postgres.devices import PostgresDevices
from cidade.store.postgres.migrations import migrate
from cidade.store.postgres.occurrences import PostgresOccurrences
from cidade.store.postgres.order import collation_sql, order_postgres
from cidade.store.postgres.q import scope_to_postgres, to_postgres

log = logging.getLogger("cidade.store")
CLOSE_TIMEOUT = 5.0  # seconds a graceful close may take
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


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset at release: nothing to reset (PostgresStore.open says why)."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda v: orjson.dumps(v).decode(),
        decoder=orjson.loads,
        schema="pg_catalog",
        format="text",
    )


class PostgresStore(PostgresAuth, PostgresDevices, PostgresOccurrences):
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
        # The orderBy collations (other than ICU's root one) this process made or found.
        self._collations: set[str] = set()
        self.watch: ChangeWatch | None = None
        # (subscription epoch, {tenant: compiled subscriptions}), checked in every write
        self.watching: tuple[int, dict[str, list[Any]]] = (-1, {})
        # NOTIFY channel that wakes every worker's notifier; one per schema (deployment).
        self.channel = f"cidade_outbox_{self.schema or 'public'}"[:63]
        self._listener: asyncpg.Connection | None = None
        self._topics: dict[str, list[Callable[[], None]]] = {}

    async def exists(self) -> bool:
        try:
            conn = await asyncpg.connect(self.dsn, server_settings=self.server_settings)
        except asyncpg.InvalidCatalogNameError:
            return False  # no such database
        try:
            table = f'"{self.schema}".schema_migrations' if self.schema else "schema_migrations"
            return await conn.fetchval("SELECT to_regclass($1)", table) is not None
        finally:
            await conn.close()

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
            # Pooled connections keep no session state (LISTEN has a connection of its own,
            # advisory locks are transactions'): asyncpg's reset query (RESET ALL, UNLISTEN *,
            # CLOSE ALL, unlock all) would cost a round trip at every release, as much as a
            # short query; an open transaction is still rolled back.
            reset=_keep_session,
        )

    async def listen(self, topic: str, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever any worker commits a change of ``topic`` ("outbox":
        notifications enqueued; "contexts": a hosted @context added or deleted; "auth": an
        account or an API key changed; "devices": a service group or a device changed), through one PostgreSQL LISTEN connection per process:
        the topic is the NOTIFY payload, so any topic works."""
        if self._listener is None:
            self._listener = await asyncpg.connect(self.dsn, server_settings=self.server_settings)
            await self._listener.add_listener(self.channel, self._dispatch)
        self._topics.setdefault(topic, []).append(callback)

    def _dispatch(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        for callback in self._topics.get(payload, ()):
            callback()

    async def close(self) -> None:
        # Shutting down must end: a connection some task never gave back would make a graceful
        # close wait for ever, so after a few seconds the rest is closed the hard way.
        if self._listener is not None:
            try:
                await asyncio.wait_for(self._listener.close(), CLOSE_TIMEOUT)
            except (TimeoutError, OSError, asyncpg.PostgresError):
                self._listener.terminate()
            self._listener = None
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("PostgreSQL connections still in use at shutdown: terminated")
                self.pool.terminate()
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

    async def get_entities(self, tenant: str, entity_ids: Sequence[str]) -> list[Entity]:
        ids = list(dict.fromkeys(entity_ids))
        if not ids:
            return []
        rows = await self._pool.fetch(
            "SELECT doc FROM entities WHERE tenant = $1 AND id = ANY($2::text[])", tenant, ids
        )
        return [r["doc"] for r in rows]

    async def write(
        self, tenant: str, ops: Sequence[WriteOp], *, chain: WriteChain | None = None
    ) -> list[Any]:
        if chain is None:
            return await self._write(tenant, ops)
        # One write of a chain at a time, in the order they came (asyncio.Lock is fair): each
        # is committed before the next begins, on whichever pooled connection.
        async with chain.turn:
            chain.check()
            try:
                return await self._write(tenant, ops)
            except BaseException as exc:
                chain.broken = exc
                raise

    async def _write(self, tenant: str, ops: Sequence[WriteOp]) -> list[Any]:
        for attempt in (1, 2):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    results, notified = await _write_batch(conn, tenant, ops, self)
                if notified and self.watch is not None:
                    self.watch.enqueued()
                return results
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
        if query.scope is not None:
            sql, qparams = scope_to_postgres(query.scope, "e.doc", len(params) + 1)
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
            if query.order and query.collation is not None:
                await self._collation(conn, query.collation)
            joins, terms = order_postgres(query.order, "e.doc", query.collation)
            rows = await conn.fetch(
                f"SELECT e.doc FROM entities e {' '.join(joins)} WHERE {clause}"
                f" ORDER BY {''.join(t + ', ' for t in terms)}e.rid"
                f" LIMIT {int(query.limit)} OFFSET {int(query.offset)}",
                *params,
            )
        return QueryResult([r["doc"] for r in rows], count)

    async def _collation(self, conn: asyncpg.Connection, tag: str) -> None:
        """Make the collation of an orderBy's ``collation`` tag in the store's schema, once."""
        if tag in self._collations:
            return
        try:
            await conn.execute(collation_sql(tag))
        except asyncpg.UniqueViolationError:
            pass  # another worker made it at the same time
        except asyncpg.PostgresError as exc:
            raise BadRequestData(f"collation {tag!r} cannot be used: {exc}") from None
        self._collations.add(tag)

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
        if query.dataset_ids:
            where.append(among("dataset_id", query.dataset_ids))
        if query.after is not None:
            params.append(_ts(query.after))
            where.append(f"{column} {'>=' if query.after_inclusive else '>'} ${len(params)}")
        if query.before is not None:
            params.append(_ts(query.before))
            where.append(f"{column} {'<=' if query.before_inclusive else '<'} ${len(params)}")
        if query.time_property == "deletedAt":
            # Only the instances that record deletions (store/history.py deletion).
            where.append("instance ? 'deletedAt'")
        found = history_source(f"attr_history WHERE {' AND '.join(where)}", column, query)
        # No window without lastN or a page cut: it sorted every row, instance JSON and all
        # (spilling to disk for a year of 15-minute readings). Times come formatted in the stored
        # format: turning 35,040 datetimes into strings in Python took longer than the query. An
        # entity id or attribute that every row shares is not read back for each row.
        one_id = query.entity_ids[0] if len(query.entity_ids) == 1 else None
        one_attr = query.attrs[0] if query.attrs and len(query.attrs) == 1 else None
        when = f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        if query.values_only:
            sql = (
                f"SELECT {'NULL' if one_id else 'entity_id'}, {'NULL' if one_attr else 'attr'},"
                f" dataset_id, {when}, num, num_int, CASE WHEN num IS NULL THEN instance END"
                f" {found} ORDER BY entity_id, attr, {column}, instance_id{_limit(query)}"
            )
            out_values: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for eid, attr, ds, t, num, num_int, inst in await self._pool.fetch(sql, *params):
                item = value_item(ds, t, int(num) if num_int else num, inst)
                out_values.setdefault(eid or one_id, {}).setdefault(attr or one_attr, []).append(
                    item
                )
            return out_values
        sql = (
            f"SELECT {'NULL' if one_id else 'entity_id'}, {'NULL' if one_attr else 'attr'},"
            f" instance_id, instance, {when}"
            f" {found} ORDER BY entity_id, attr, {column}, instance_id{_limit(query)}"
        )
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for eid, attr, iid, item, t in await self._pool.fetch(sql, *params):
            item["instanceId"] = iid
            item["_t"] = t
            out.setdefault(eid or one_id, {}).setdefault(attr or one_attr, []).append(item)
        return out

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
        numbers, sum of squared deviations from the mean). Integers stay integers (exact
        numeric sums) as in Python; min and max are the stored numbers themselves."""
        column = TIME_COLUMNS[time_property]
        attr_match = " AND h.attr = ANY($6::text[])" if attrs else ""  # $6: see args
        # One index range scan over the whole window; width_bucket finds each row's period by
        # binary search in the sorted period starts (exact, calendar months included). Only the
        # aggregates the methods need are computed (a distinct count alone costs as much as the
        # scan). Integers (num_int, below 2^53) sum exactly as bigint; var_samp (Youngs-Cramer)
        # gives the squared deviations.
        wanted = set(methods)
        parts = ["count(*) AS n", "count(num) AS nn", "bool_and(num_int) AS ints"]
        if wanted & {"sum", "avg"}:
            parts += ["sum(num) AS ftotal", "sum(num::bigint) FILTER (WHERE num_int) AS itotal"]
        if wanted & {"min", "max"}:
            parts += [
                "min(num) FILTER (WHERE num_int) AS imin",
                "min(num) FILTER (WHERE NOT num_int) AS fmin",
                "max(num) FILTER (WHERE num_int) AS imax",
                "max(num) FILTER (WHERE NOT num_int) AS fmax",
            ]
        if "sumsq" in wanted:
            parts += [
                "sum(num * num) AS fsq",
                "sum(num::numeric * num::numeric) FILTER (WHERE num_int) AS isq",
            ]
        if "distinctCount" in wanted:
            parts.append("count(DISTINCT num) AS dc")
        if "stddev" in wanted:
            parts.append("var_samp(num) * (count(*) - 1) AS m2")
        sql = (
            f"SELECT h.attr, h.dataset_id AS ds,"
            f" width_bucket(h.{column}, $3::timestamptz[]) - 1 AS k, {', '.join(parts)}"
            f" FROM attr_history h WHERE h.tenant = $1 AND h.entity_id = $2{attr_match}"
            f" AND h.{column} >= $4 AND h.{column} < $5 GROUP BY 1, 2, 3"
        )
        args: list[Any] = [
            tenant,
            entity_id,
            [_ts(b) for b in bounds[:-1]],
            _ts(bounds[0]),
            _ts(bounds[-1]),
        ]
        if attrs:
            args.append(list(attrs))
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # A few hundred groups: hash them rather than sort a year of rows.
                await conn.execute(
                    "SET LOCAL work_mem = '64MB'; SET LOCAL enable_sort = off;"
                    " SET LOCAL enable_incremental_sort = off"
                )
                rows = await conn.fetch(sql, *args)
        except asyncpg.NumericValueOutOfRangeError:
            # float8 refuses what Python rounds to 0 or inf (squares of 1e-165, of 1e200):
            # let the caller aggregate those instances itself.
            return None
        out: dict[str, dict[str, list[tuple]]] = {}
        for r in rows:
            got = dict(r)
            ints = r["ints"] and r["nn"] == r["n"]
            total = squares = low = high = None
            if "itotal" in got:
                total = int(got["itotal"]) if ints else got["ftotal"]
            if "isq" in got:
                squares = int(got["isq"]) if ints else got["fsq"]
            if "imin" in got:
                low = _extreme(got["imin"], got["fmin"], min)
                high = _extreme(got["imax"], got["fmax"], max)
                if low is _TIE or high is _TIE:
                    return None
            row = (r["k"], r["n"], r["nn"], total, low, high, squares, got.get("dc"), got.get("m2"))
            out.setdefault(r["attr"], {}).setdefault(r["ds"], []).append(row)
        return out

    async def add_history(self, tenant: str, entity_id: str, rows: list[HistoryRow]) -> None:
        """Add instances to an entity's history (the temporal API's own writes); one observed
        at the time an instance of its series (attribute, datasetId) was replaces it."""
        observed = [r for r in rows if r[4] is not None]
        async with self._pool.acquire() as conn, conn.transaction():
            if observed:
                await conn.execute(
                    "DELETE FROM attr_history h USING unnest($3::text[], $4::text[],"
                    " $5::timestamptz[]) AS u(a, d, t) WHERE h.tenant = $1 AND h.entity_id = $2"
                    " AND h.attr = u.a AND h.dataset_id = u.d AND h.time = u.t"
                    " AND h.observed_at IS NOT NULL",
                    tenant,
                    entity_id,
                    [r[0] for r in observed],
                    [r[1] for r in observed],
                    [_ts(r[3]) for r in observed],
                )
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
        params: list[Any] = [tenant]

        def bind(value: Any, cast: str = "") -> str:
            params.append(value)
            return f"${len(params)}{cast}"

        history = "SELECT 1 FROM attr_history h WHERE h.tenant = d.tenant AND h.entity_id = d.id"
        if query.attrs:
            history += f" AND h.attr = ANY({bind(list(query.attrs), '::text[]')})"
        where = [
            "d.tenant = $1",
            "NOT EXISTS (SELECT 1 FROM entities e WHERE e.tenant = d.tenant AND e.id = d.id)",
            f"EXISTS ({history})",
        ]
        if query.ids:
            where.append(f"d.id = ANY({bind(list(query.ids), '::text[]')})")
        if query.id_pattern is not None:
            where.append(f"d.id ~ {bind(query.id_pattern, '::text')}")
        if query.types is not None:
            where.append(_type_sql(query.types, bind, "d.types"))
        clause = " AND ".join(where)
        try:
            async with self._pool.acquire() as conn:
                count = None
                if query.count:
                    count = await conn.fetchval(
                        f"SELECT count(*) FROM deleted_entities d WHERE {clause}", *params
                    )
                rows = await conn.fetch(
                    f"SELECT d.id, d.types, d.deleted_at FROM deleted_entities d WHERE {clause}"
                    f" ORDER BY d.deleted_at, d.id LIMIT {int(query.limit)}"
                    f" OFFSET {int(query.offset)}",
                    *params,
                )
        except asyncpg.InvalidRegularExpressionError as exc:
            raise BadRequestData(f"the regular expression cannot be used: {exc}") from None
        found = [
            {"id": r["id"], "type": list(r["types"]), "deletedAt": _fmt(r["deleted_at"])}
            for r in rows
        ]
        return QueryResult(found, count)

    async def forget_history(self, tenant: str, entity_id: str) -> bool:
        """Delete an entity's whole history (and its record of a deleted entity); whether there
        was any."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.execute(
                "DELETE FROM attr_history WHERE tenant = $1 AND entity_id = $2", tenant, entity_id
            )
            marks = await conn.execute(
                "DELETE FROM deleted_entities WHERE tenant = $1 AND id = $2", tenant, entity_id
            )
        return int(rows.split()[-1]) + int(marks.split()[-1]) > 0

    # -- retention ------------------------------------------------------------------------------

    async def purge_history(self, cutoffs: dict[str, str], default: str | None) -> int:
        """Delete expired history (hub/retention.py). With a default for every type, the monthly
        partitions entirely older than the earliest cutoff (the longest retention) are dropped
        whole; then, per entity, the instances older than the earliest cutoff of its types go
        (-infinity stands for keep for ever: nothing is older)."""
        deleted = 0
        if default is not None:
            deleted += await self._drop_partitions(min([default, *cutoffs.values()]))
        async with self._pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                "WITH rules(type, cutoff) AS (SELECT * FROM unnest($1::text[], $2::timestamptz[])),"
                " typed(tenant, id, type) AS ("
                " SELECT e.tenant, e.id, unnest(e.types) FROM entities e"
                " UNION SELECT d.tenant, d.id, unnest(d.types) FROM deleted_entities d),"
                " expiring AS (SELECT typed.tenant, typed.id,"
                " min(coalesce(rules.cutoff, $3::timestamptz, '-infinity')) AS cutoff"
                " FROM typed LEFT JOIN rules ON rules.type = typed.type"
                " GROUP BY typed.tenant, typed.id)"
                " DELETE FROM attr_history h USING expiring x"
                " WHERE h.tenant = x.tenant AND h.entity_id = x.id AND h.time < x.cutoff",
                list(cutoffs),
                [_ts(c) for c in cutoffs.values()],
                _ts(default),
            )
            deleted += int(status.split()[-1])
            if default is not None:
                # History no entity record names a type for (kept before migration 0005): the default.
                status = await conn.execute(
                    "DELETE FROM attr_history h WHERE h.time < $1 AND NOT EXISTS"
                    " (SELECT 1 FROM entities e WHERE e.tenant = h.tenant AND e.id = h.entity_id)"
                    " AND NOT EXISTS (SELECT 1 FROM deleted_entities d"
                    " WHERE d.tenant = h.tenant AND d.id = h.entity_id)",
                    _ts(default),
                )
                deleted += int(status.split()[-1])
            await conn.execute(
                "DELETE FROM deleted_entities d WHERE NOT EXISTS (SELECT 1 FROM attr_history h"
                " WHERE h.tenant = d.tenant AND h.entity_id = d.id)"
            )
        return deleted

    async def _drop_partitions(self, cutoff: str) -> int:
        """Drop the history partitions whose month ends at or before ``cutoff``; the number of
        instances they held."""
        limit = _ts(cutoff)
        assert limit is not None
        dropped = 0
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            names = await conn.fetch(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'attr_history'::regclass"
            )
            for (name,) in names:
                try:
                    start = datetime.strptime(name, "attr_history_%Y_%m").replace(tzinfo=UTC)
                except ValueError:
                    continue  # not one of ours
                end = (start + timedelta(days=32)).replace(day=1)
                if end > limit:
                    continue
                dropped += await conn.fetchval(f'SELECT count(*) FROM "{name}"')
                await conn.execute(f'DROP TABLE "{name}"')
                self._partitions.discard(f"{start:%Y-%m}")
        return dropped

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
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO tenants(name) VALUES ($1) ON CONFLICT DO NOTHING", tenant
            )
            status = await conn.execute(
                "INSERT INTO subscriptions(tenant, id, doc, kind)"
                " VALUES ($1, $2, $3::text::jsonb, $4) ON CONFLICT DO NOTHING",
                tenant,
                sub["id"],
                orjson.dumps(sub).decode(),
                kind,
            )
            if status.split()[-1] != "1":
                return False
            await conn.execute(
                "DELETE FROM subscription_status WHERE tenant = $1 AND id = $2", tenant, sub["id"]
            )
            if outbox:
                await _insert_outbox(conn, self, tenant, list(outbox))
            await _bump_epoch(conn)
        if outbox and self.watch is not None:
            self.watch.enqueued()
        return True

    async def get_subscription(
        self, tenant: str, sub_id: str, *, kind: str | None = ENTITY_KIND
    ) -> dict[str, Any] | None:
        return await self._pool.fetchval(
            "SELECT doc FROM subscriptions WHERE tenant = $1 AND id = $2"
            " AND ($3::text IS NULL OR kind = $3)",
            tenant,
            sub_id,
            kind,
        )

    async def replace_subscription(
        self,
        tenant: str,
        sub: dict[str, Any],
        *,
        kind: str = ENTITY_KIND,
        outbox: Sequence[OutboxEntry] = (),
    ) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(UNPARK_LANE_POSTGRES, tenant, sub["id"])
            status = await conn.execute(
                "UPDATE subscriptions SET doc = $3::text::jsonb"
                " WHERE tenant = $1 AND id = $2 AND kind = $4",
                tenant,
                sub["id"],
                orjson.dumps(sub).decode(),
                kind,
            )
            if status.split()[-1] != "1":
                return False
            # A new timeInterval (or one switched back on) starts its clock again.
            await conn.execute(
                "UPDATE subscription_status SET next_periodic = NULL WHERE tenant = $1 AND id = $2",
                tenant,
                sub["id"],
            )
            if outbox:
                await _insert_outbox(conn, self, tenant, list(outbox))
            await _bump_epoch(conn)
        if outbox and self.watch is not None:
            self.watch.enqueued()
        return True

    async def delete_subscription(
        self, tenant: str, sub_id: str, *, kind: str = ENTITY_KIND
    ) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(UNPARK_LANE_POSTGRES, tenant, sub_id)
            status = await conn.execute(
                "DELETE FROM subscriptions WHERE tenant = $1 AND id = $2 AND kind = $3",
                tenant,
                sub_id,
                kind,
            )
            if status.split()[-1] != "1":
                return False
            await conn.execute(
                "DELETE FROM outbox WHERE tenant = $1 AND subscription_id = $2", tenant, sub_id
            )
            await conn.execute(
                "DELETE FROM subscription_status WHERE tenant = $1 AND id = $2", tenant, sub_id
            )
            await _bump_epoch(conn)
        return True

    async def list_subscriptions(
        self, tenant: str, limit: int, offset: int, *, kind: str = ENTITY_KIND
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._pool.acquire() as conn:
            total = await conn.fetchval(
                "SELECT count(*) FROM subscriptions WHERE tenant = $1 AND kind = $2", tenant, kind
            )
            rows = await conn.fetch(
                "SELECT doc FROM subscriptions WHERE tenant = $1 AND kind = $2 ORDER BY seq"
                f" LIMIT {int(limit)} OFFSET {int(offset)}",
                tenant,
                kind,
            )
        return [r["doc"] for r in rows], total

    # -- context source registrations ---------------------------------------------------------

    async def get_registration(self, tenant: str, reg_id: str) -> dict[str, Any] | None:
        return await self._pool.fetchval(
            "SELECT doc FROM csource_registrations WHERE tenant = $1 AND id = $2", tenant, reg_id
        )

    async def list_registrations(self, tenant: str) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT doc FROM csource_registrations WHERE tenant = $1 ORDER BY seq", tenant
        )
        return [r["doc"] for r in rows]

    async def write_registration(
        self, tenant: str, reg_id: str, apply: RegistrationApply, match: RegistrationMatch
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        async with self._pool.acquire() as conn, conn.transaction():
            # Serialise the changes of one registration (existing or not) across workers.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))", f"{tenant}\n{reg_id}"
            )
            before = await conn.fetchval(
                "SELECT doc FROM csource_registrations WHERE tenant = $1 AND id = $2",
                tenant,
                reg_id,
            )
            after = apply(before)
            if after is None:
                await conn.execute(
                    "DELETE FROM csource_registrations WHERE tenant = $1 AND id = $2",
                    tenant,
                    reg_id,
                )
            elif before is None:
                await conn.execute(
                    "INSERT INTO tenants(name) VALUES ($1) ON CONFLICT DO NOTHING", tenant
                )
                await conn.execute(
                    "INSERT INTO csource_registrations(tenant, id, doc)"
                    " VALUES ($1, $2, $3::text::jsonb)",
                    tenant,
                    reg_id,
                    orjson.dumps(after).decode(),
                )
            else:
                await conn.execute(
                    "UPDATE csource_registrations SET doc = $3::text::jsonb"
                    " WHERE tenant = $1 AND id = $2",
                    tenant,
                    reg_id,
                    orjson.dumps(after).decode(),
                )
            rows = await conn.fetch(
                "SELECT doc FROM subscriptions WHERE tenant = $1 AND kind = $2 ORDER BY seq",
                tenant,
                CSOURCE_KIND,
            )
            entries = match([r["doc"] for r in rows], before, after)
            if entries:
                await _insert_outbox(conn, self, tenant, entries)
        if entries and self.watch is not None:
            self.watch.enqueued()
        return before, after

    # -- notification delivery ------------------------------------------------------------------

    async def claim_lanes(self, owner: str, now: float, lease: float) -> list[str]:
        # SKIP LOCKED: workers claiming at once split the lanes instead of queueing on them.
        rows = await self._pool.fetch(
            "UPDATE delivery_lanes d SET owner = $1, lease_until = $2"
            " FROM (SELECT lane FROM delivery_lanes"
            "  WHERE (owner IS NULL OR lease_until < $3) AND retry_at <= $3"
            "  AND EXISTS (SELECT 1 FROM outbox o WHERE o.lane = delivery_lanes.lane)"
            "  FOR UPDATE SKIP LOCKED) free"
            " WHERE d.lane = free.lane RETURNING d.lane",
            owner,
            now + lease,
            now,
        )
        return [r["lane"] for r in rows]

    async def lane_items(self, lane: str, limit: int) -> list[OutboxItem]:
        rows = await self._pool.fetch(
            "SELECT seq, tenant, subscription_id, created_at, attempts, body FROM outbox"
            " WHERE lane = $1 ORDER BY seq LIMIT $2",
            lane,
            limit,
        )
        return [OutboxItem(*r) for r in rows]

    async def record_attempt(self, tenant: str, subscription_id: str, at: str) -> None:
        # A counter, not data: its commit need not wait for the WAL to reach the disk (a crash
        # may forget the last few attempts, whose notifications are sent again anyway), so a
        # notification costs one round trip more, not one more flush.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit = off")
            await conn.execute(_STATUS_UPSERT, *attempt_row(tenant, subscription_id, at))

    async def settle(
        self, lane: str, owner: str, outcomes: list[Outcome], lease_until: float
    ) -> bool:
        # One statement, one round trip: a busy lane settles faster.
        rows = status_rows(outcomes)
        columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 7
        held = await self._pool.fetchval(
            _SETTLE, lease_until, lane, owner, [o.item.seq for o in outcomes], *columns
        )
        return bool(held)

    async def defer_lane(
        self, lane: str, owner: str, item: OutboxItem, at: str, retry_at: float
    ) -> None:
        # Rows in the order every transaction here takes them: the lane, then its outbox
        # items, then the status (settle, delete_subscription). The outbox item first deadlocked
        # with a subscription's deletion, which holds the lane and waits for its items.
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE delivery_lanes SET owner = NULL, retry_at = $1, failures = failures + 1"
                " WHERE lane = $2 AND owner = $3",
                retry_at,
                lane,
                owner,
            )
            await conn.execute("UPDATE outbox SET attempts = attempts + 1 WHERE seq = $1", item.seq)
            await conn.executemany(_STATUS_UPSERT, status_rows([Outcome(item, "failed", at)]))

    async def release_lane(self, lane: str, owner: str) -> None:
        await self._pool.execute(
            "UPDATE delivery_lanes SET owner = NULL WHERE lane = $1 AND owner = $2", lane, owner
        )

    async def notification_status(self, tenant: str, ids: list[str]) -> dict[str, dict]:
        if not ids:
            return {}
        rows = await self._pool.fetch(
            "SELECT id, times_sent, times_failed, last_notification, last_success, last_failure"
            " FROM subscription_status WHERE tenant = $1 AND id = ANY($2::text[])",
            tenant,
            ids,
        )
        return {r[0]: status_info(tuple(r)[1:]) for r in rows}

    async def claim_periodic(
        self, now: float, *, kind: str = ENTITY_KIND
    ) -> list[tuple[str, dict[str, Any]]]:
        taken = []
        async with self._pool.acquire() as conn, conn.transaction():
            due = await conn.fetch(
                "SELECT s.tenant, s.doc, st.next_periodic FROM subscriptions s"
                " LEFT JOIN subscription_status st ON st.tenant = s.tenant AND st.id = s.id"
                " WHERE s.doc ? 'timeInterval' AND s.kind = $2"
                " AND coalesce(st.next_periodic, 0) <= $1",
                now,
                kind,
            )
            for tenant, sub, previous in due:
                # Compare-and-set on the due time: of several workers, one takes each turn.
                got = await conn.fetchval(
                    "INSERT INTO subscription_status AS st (tenant, id, next_periodic)"
                    " VALUES ($1, $2, $3) ON CONFLICT (tenant, id) DO UPDATE"
                    " SET next_periodic = excluded.next_periodic"
                    " WHERE st.next_periodic IS NOT DISTINCT FROM $4 RETURNING 1",
                    tenant,
                    sub["id"],
                    now + float(sub["timeInterval"]),
                    previous,
                )
                if got:
                    taken.append((tenant, sub))
        return taken

    async def enqueue(self, tenant: str, entries: list[OutboxEntry]) -> None:
        if not entries:
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await _insert_outbox(conn, self, tenant, entries)
        if self.watch is not None:
            self.watch.enqueued()

    # -- stored @contexts (§5.13) ------------------------------------------------------------

    async def context_entries(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT local_id, info, hits, last_used FROM hosted_contexts")
        return [
            {
                "local_id": r["local_id"],
                "info": r["info"],
                "hits": r["hits"],
                "last_used": r["last_used"],
            }
            for r in rows
        ]

    async def context_bodies(self, local_ids: Sequence[str]) -> dict[str, Any]:
        rows = await self._pool.fetch(
            "SELECT local_id, body FROM hosted_contexts WHERE local_id = ANY($1::text[])",
            list(local_ids),
        )
        return {r["local_id"]: r["body"] for r in rows}

    async def save_context(self, local_id: str, info: dict[str, Any], body: Any) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO hosted_contexts(local_id, info, body) VALUES ($1, $2, $3)"
                " ON CONFLICT (local_id) DO UPDATE SET info = excluded.info, body = excluded.body",
                local_id,
                orjson.loads(orjson.dumps(info, default=str)),
                body,
            )
            await conn.execute("SELECT pg_notify($1, 'contexts')", self.channel)

    async def delete_context(self, local_id: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM hosted_contexts WHERE local_id = $1", local_id)
            await conn.execute("SELECT pg_notify($1, 'contexts')", self.channel)

    async def add_context_usage(self, usage: Sequence[tuple[str, int, str]]) -> None:
        if not usage:
            return
        # One statement for the batch; counters only, so no NOTIFY: the others read them when
        # they answer a details request.
        await self._pool.execute(
            "UPDATE hosted_contexts AS h SET hits = h.hits + u.hits,"
            " last_used = greatest(h.last_used, u.last_used)"
            " FROM unnest($1::text[], $2::bigint[], $3::text[]) AS u(local_id, hits, last_used)"
            " WHERE h.local_id = u.local_id",
            [u[0] for u in usage],
            [u[1] for u in usage],
            [u[2] for u in usage],
        )


def _type_sql(expr: TypeExpr, bind: Any, column: str = "e.types") -> str:
    if isinstance(expr, str):
        return f"{column} @> ARRAY[{bind(expr, '::text')}]"
    op, parts = expr
    joiner = " AND " if op == "and" else " OR "
    return "(" + joiner.join(_type_sql(p, bind, column) for p in parts) + ")"


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


_STATUS_UPSERT = (
    "INSERT INTO subscription_status AS s (tenant, id, times_sent, times_failed,"
    " last_notification, last_success, last_failure) VALUES ($1, $2, $3, $4, $5, $6, $7)"
    " ON CONFLICT (tenant, id) DO UPDATE"
    " SET times_sent = s.times_sent + excluded.times_sent,"
    " times_failed = s.times_failed + excluded.times_failed,"
    " last_notification = coalesce(excluded.last_notification, s.last_notification),"
    " last_success = coalesce(excluded.last_success, s.last_success),"
    " last_failure = coalesce(excluded.last_failure, s.last_failure)"
)


# settle(): renew the lease of a lane still held, delete the items delivered, add to the
# status of their subscriptions (one row each: status_rows) — nothing when the lane was lost.
_SETTLE = (
    "WITH held AS ("
    " UPDATE delivery_lanes SET lease_until = $1, failures = 0"
    " WHERE lane = $2 AND owner = $3 RETURNING lane),"
    " gone AS (DELETE FROM outbox WHERE seq = ANY($4::bigint[])"
    " AND EXISTS (SELECT 1 FROM held)),"
    " counted AS (INSERT INTO subscription_status AS s (tenant, id, times_sent, times_failed,"
    " last_notification, last_success, last_failure)"
    " SELECT * FROM unnest($5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[],"
    " $10::text[], $11::text[]) WHERE EXISTS (SELECT 1 FROM held)"
    " ON CONFLICT (tenant, id) DO UPDATE"
    " SET times_sent = s.times_sent + excluded.times_sent,"
    " times_failed = s.times_failed + excluded.times_failed,"
    " last_notification = coalesce(excluded.last_notification, s.last_notification),"
    " last_success = coalesce(excluded.last_success, s.last_success),"
    " last_failure = coalesce(excluded.last_failure, s.last_failure))"
    " SELECT count(*) FROM held"
)


async def _bump_epoch(conn: asyncpg.Connection) -> None:
    await conn.execute("UPDATE subscription_epoch SET epoch = epoch + 1")


async def _insert_outbox(
    conn: asyncpg.Connection, store: PostgresStore, tenant: str, entries: list[OutboxEntry]
) -> None:
    # One round trip: the items, their lanes, and the NOTIFY that wakes every worker (this one
    # included) once the transaction commits.
    await conn.execute(
        "WITH items AS (INSERT INTO outbox(lane, tenant, subscription_id, created_at, body)"
        " SELECT u.lane, $1, u.sub, $2, u.body::jsonb"
        " FROM unnest($3::text[], $4::text[], $5::text[]) AS u(lane, sub, body)),"
        " lanes AS (INSERT INTO delivery_lanes(lane) SELECT unnest($6::text[])"
        " ON CONFLICT DO NOTHING)"
        " SELECT pg_notify($7, 'outbox')",
        tenant,
        time.time(),
        [e[0] for e in entries],
        [e[1] for e in entries],
        [e[2].decode() for e in entries],
        sorted({e[0] for e in entries}),
        store.channel,
    )


async def _watching(
    conn: asyncpg.Connection, store: PostgresStore, tenant: str, epoch: int
) -> list[Any]:
    """The tenant's compiled subscriptions, recompiled when the epoch read in this transaction
    differs from the one they were compiled at (another worker may have changed them)."""
    assert store.watch is not None
    if epoch != store.watching[0]:
        by_tenant: dict[str, list[Any]] = {}
        for r in await conn.fetch(
            "SELECT tenant, doc FROM subscriptions WHERE kind = $1 ORDER BY seq", ENTITY_KIND
        ):
            compiled = store.watch.compile(r["doc"])
            if compiled is not None:
                by_tenant.setdefault(r["tenant"], []).append(compiled)
        store.watching = (epoch, by_tenant)
    return store.watching[1].get(tenant, [])


async def _write_batch(
    conn: asyncpg.Connection, tenant: str, ops: Sequence[WriteOp], store: PostgresStore
) -> tuple[list[Any], bool]:
    # One round trip: make sure the tenant exists, and read the subscription epoch (below).
    epoch = await conn.fetchval(
        "WITH t AS (INSERT INTO tenants(name) VALUES ($1) ON CONFLICT DO NOTHING)"
        " SELECT epoch FROM subscription_epoch",
        tenant,
    )
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
    forgotten: list[str] = []
    tombstones: list[tuple[str, list[str]]] = []
    deletes: list[int] = []
    updates: list[tuple[int, list[str], Entity]] = []
    inserts: list[tuple[str, list[str], Entity]] = []
    for eid in applied.changed:
        rid = rids.get(eid)
        doc = applied.after[eid]
        if store.keep_history and doc is None:
            if not store.history_after_delete:  # by default an entity's history goes with it
                forgotten.append(eid)
            elif eid in stored:  # kept: remember what the entity was
                tombstones.append((eid, stored[eid]["type"]))
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
        located = [u[0] for u in updates if _has_geo(stored.get(u[2]["id"]))]
        if located:  # only entities that had a GeoProperty have geo rows to drop
            await conn.execute("DELETE FROM geo_rows WHERE rid = ANY($1::bigint[])", located)
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
        await conn.execute(
            "DELETE FROM deleted_entities WHERE tenant = $1 AND id = ANY($2::text[])",
            tenant,
            forgotten,
        )
    if tombstones:
        await conn.execute(
            "INSERT INTO deleted_entities"
            " SELECT $1, u.id, u.types::text[], now() FROM unnest($2::text[], $3::text[])"
            " AS u(id, types) ON CONFLICT (tenant, id)"
            " DO UPDATE SET types = excluded.types, deleted_at = excluded.deleted_at",
            tenant,
            [t[0] for t in tombstones],
            [_pg_array(t[1]) for t in tombstones],
        )
    history_rows = [(eid, *row) for eid, row in applied.history()] if store.keep_history else []
    if history_rows:
        await _insert_history(conn, store, tenant, history_rows)
    entries: list[OutboxEntry] = []
    if store.watch is not None and applied.changed:
        watching = await _watching(conn, store, tenant, epoch)
        if watching:
            entries = applied.notifications(store.watch, watching)
            if entries:
                await _insert_outbox(conn, store, tenant, entries)
    return applied.results, bool(entries)


async def _insert_history(
    conn: asyncpg.Connection, store: PostgresStore, tenant: str, rows: list[tuple]
) -> None:
    """rows: (entity id, *HistoryRow)."""
    await store.ensure_partitions(conn, {r[4][:7] for r in rows})
    await conn.execute(
        "INSERT INTO attr_history(tenant, entity_id, attr, dataset_id, instance_id, time,"
        " observed_at, modified_at, created_at, instance, num, num_int)"
        " SELECT $1, u.e, u.a, u.d, u.i, u.t, u.o, u.m, u.c, u.inst::jsonb, u.num, u.num_int"
        " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],"
        " $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::text[],"
        " $11::float8[], $12::bool[]) AS u(e, a, d, i, t, o, m, c, inst, num, num_int)",
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
        [_pg_number(r[8])[0] for r in rows],
        [_pg_number(r[8])[1] for r in rows],
    )


_FLOAT8_INTS = 1 << 53  # integers float8 holds exactly


def _pg_number(inst: dict[str, Any]) -> tuple[float | None, bool | None]:
    """(num, num_int) of a history row: the Property's number as float8, and whether it is an
    integer (kept only where float8 holds it exactly)."""
    num = numeric_value(inst)
    if num is None:
        return None, None
    if type(num) is int:
        return (float(num), True) if -_FLOAT8_INTS < num < _FLOAT8_INTS else (None, None)
    if num == 0 and math.copysign(1.0, num) < 0:
        return None, None  # -0.0 does not come back from float8 as it went in
    return num, False


_TIE = object()


def _extreme(of_ints: Any, of_floats: Any, pick: Any) -> Any:
    """The min (or max) of a period from the extremes of its integer and its float numbers,
    typed as Python's min would give it: an int when an integer wins, a float when a float
    does; _TIE when an integer and a float are equal (Python keeps whichever came first)."""
    if of_ints is None:
        return None if of_floats is None else float(of_floats)
    if of_floats is None:
        return int(of_ints)
    if of_ints == of_floats:
        return _TIE
    return int(of_ints) if pick(of_ints, of_floats) == of_ints else float(of_floats)


def _fmt(value: datetime) -> str:
    """Back to the stored timestamp format (UTC, microseconds, Z)."""
    return from_datetime(value)


def _ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _has_geo(doc: Entity | None) -> bool:
    return doc is not None and any(
        inst.get("type") == "GeoProperty" for insts in doc["attrs"].values() for inst in insts
    )


def _pg_array(items: list[str]) -> str:
    """A text[] literal: unnest() cannot take a 2-D array of ragged type lists."""
    return (
        "{" + ",".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "}"
    )


def _limit(query: HistoryQuery) -> str:
    return "" if query.limit is None else f" LIMIT {int(query.limit)}"
