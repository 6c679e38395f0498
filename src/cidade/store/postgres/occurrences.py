"""Occurrence storage on PostgreSQL (docs/occurrences.md): a mixin of PostgresStore. A write is
one transaction: the occurrence's row locked (FOR UPDATE), its function run, the row, its
departments, its history events and its messages written; a refusal rolls it all back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from cidade.store.devices import check_tenant
from cidade.store.occurrences import (
    ORDERS,
    P90,
    DurationFigures,
    OccurrenceAggregates,
    OccurrenceApply,
    OccurrenceChange,
    OccurrenceConflict,
    OccurrenceMessage,
    OccurrencePage,
    OccurrenceQuery,
    OccurrenceStatisticsQuery,
    RuleWatch,
    StoredOccurrence,
    check_query,
    check_settlement,
    distance_m,
    epoch,
    occurrence_columns,
    query_box,
)

_NAMES = [
    "category",
    "grp",
    "status",
    "open",
    "priority",
    "source",
    "area",
    "lat",
    "lon",
    "created_at",
    "updated_at",
    "response_due",
    "resolution_due",
    "token",
    "rule_key",
    "responded_at",
    "resolved_at",
    "response_deadline",
    "resolution_deadline",
]
# The columns' types where they are not text.
COLUMN_TYPES = {
    "open": "boolean",
    "lat": "float8",
    "lon": "float8",
    "created_at": "float8",
    "updated_at": "float8",
    "response_due": "float8",
    "resolution_due": "float8",
    "responded_at": "float8",
    "resolved_at": "float8",
    "response_deadline": "float8",
    "resolution_deadline": "float8",
}


# (met, due) columns of the response and resolution deadlines, in that order.
_MEASURES = (("responded_at", "response_deadline"), ("resolved_at", "resolution_deadline"))


def _row(row: Any) -> StoredOccurrence:
    return StoredOccurrence(row[0], row[1], row[2], row[3])


class _Narrowed:
    """The conditions (and their numbered parameters) of a tenant's occurrences narrowed by
    what is given: a column among values, held by one of the departments, a column's bounds
    (None: not narrowed); ``alias``: the table's, with its dot."""

    def __init__(
        self,
        tenant: str,
        alias: str,
        among: Iterable[tuple[str, Sequence[Any] | None]],
        departments: Sequence[str] | None,
        bounds: Iterable[tuple[str, str, float | None]],
    ) -> None:
        self.params: list[Any] = [tenant]
        self.where = [f"{alias}tenant = $1"]
        for column, values in among:
            if values is not None:
                self.where.append(f"{alias}{column} = ANY({self.param(list(values))}::text[])")
        if departments is not None:
            self.where.append(
                f"{alias}number IN (SELECT number FROM occurrence_departments WHERE department"
                f" = ANY({self.param(list(departments))}::text[]))"
            )
        for column, op, value in bounds:
            if value is not None:
                self.where.append(f"{alias}{column} {op} {self.param(float(value))}")

    def param(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"


class PostgresOccurrences:
    _pool: asyncpg.Pool

    async def write_occurrence(
        self, tenant: str, number: int | None, apply: OccurrenceApply
    ) -> StoredOccurrence:
        check_tenant(tenant)
        async with self._pool.acquire() as conn:
            if number is None:
                # A new one: its number first, then everything in one statement, which is a
                # transaction of its own (a refusal leaves a gap in the numbers, no more).
                new_number = await conn.fetchval(
                    "SELECT nextval(pg_get_serial_sequence('occurrences', 'number'))"
                )
                change = apply(None, new_number)
                if not change.photos:
                    await self._write_change(conn, tenant, new_number, None, change)
                    return StoredOccurrence(new_number, 1, change.doc, change.private)
                async with conn.transaction():
                    await self._write_change(conn, tenant, new_number, None, change)
                return StoredOccurrence(new_number, 1, change.doc, change.private)
            async with conn.transaction():
                row = await conn.fetchrow(
                    "SELECT number, version, doc, private FROM occurrences"
                    " WHERE tenant = $1 AND number = $2 FOR UPDATE",
                    tenant,
                    number,
                )
                if row is None:
                    raise LookupError(number)
                current = _row(row)
                change = apply(current, number)
                await self._write_change(conn, tenant, number, current, change)
            return StoredOccurrence(number, current.version + 1, change.doc, change.private)

    @staticmethod
    async def _write_change(
        conn: Any,
        tenant: str,
        number: int,
        current: StoredOccurrence | None,
        change: OccurrenceChange,
    ) -> None:
        """The occurrence's row, departments, history events and messages in one statement
        (one round trip, where a statement each took six or more), then its photos."""
        cols = occurrence_columns(change.doc)
        departments = cols.pop("departments")
        args: list[Any] = []

        def arg(value: Any, cast: str) -> str:
            args.append(value)
            return f"${len(args)}::{cast}"

        values = {n: arg(cols[n], COLUMN_TYPES.get(n, "text")) for n in _NAMES}
        geom = (
            f"ST_SetSRID(ST_MakePoint({values['lon']}, {values['lat']}), 4326)"
            if cols["lat"] is not None and cols["lon"] is not None
            else "NULL"
        )
        n, t = arg(number, "bigint"), arg(tenant, "text")
        version = arg((current.version if current else 0) + 1, "integer")
        doc, private = arg(change.doc, "jsonb"), arg(change.private, "jsonb")
        if current is None:
            write = (
                f"INSERT INTO occurrences(number, tenant, version, doc, private, geom,"
                f" {', '.join(_NAMES)}) VALUES ({n}, {t}, {version}, {doc}, {private}, {geom},"
                f" {', '.join(values.values())})"
            )
        else:
            sets = ", ".join(f"{name} = {value}" for name, value in values.items())
            write = (
                f"UPDATE occurrences SET {sets}, version = {version}, doc = {doc},"
                f" private = {private}, geom = {geom} WHERE number = {n} AND tenant = {t}"
            )
        held = arg(departments, "text[]")
        parts = [f"o AS ({write} RETURNING number)"]
        if current is not None:
            parts.append(
                "gone AS (DELETE FROM occurrence_departments WHERE number = "
                f"{n} AND NOT (department = ANY({held})))"
            )
        parts.append(
            "held AS (INSERT INTO occurrence_departments(number, department)"
            f" SELECT {n}, unnest({held}) ON CONFLICT DO NOTHING)"
        )
        if change.events:
            events = change.events
            parts.append(
                "events AS (INSERT INTO occurrence_events(tenant, number, at, kind, public, doc)"
                f" SELECT {t}, {n}, e.at, e.kind, e.public, e.doc::jsonb FROM unnest("
                f"{arg([epoch(e['at']) for e in events], 'float8[]')},"
                f" {arg([e['kind'] for e in events], 'text[]')},"
                f" {arg([bool(e.get('public')) for e in events], 'bool[]')},"
                f" {arg([orjson.dumps(e).decode() for e in events], 'text[]')})"
                " AS e(at, kind, public, doc))"
            )
        if change.messages:
            messages = change.messages
            parts.append(
                "messages AS (INSERT INTO occurrence_messages(tenant, number, state, next_at,"
                f" created_at, doc) SELECT {t}, {n}, 'pending', m.at, m.at, m.doc::jsonb"
                f" FROM unnest({arg([epoch(m['at']) for m in messages], 'float8[]')},"
                f" {arg([orjson.dumps(m).decode() for m in messages], 'text[]')}) AS m(at, doc))"
            )
        try:
            await conn.execute(f"WITH {', '.join(parts)} SELECT number FROM o", *args)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "occurrences_rule":
                raise OccurrenceConflict(cols["rule_key"]) from None
            raise
        if change.photos:
            await conn.executemany(
                "INSERT INTO occurrence_photos(tenant, number, id, media_type, data)"
                " VALUES ($1, $2, $3, $4, $5)",
                [(tenant, number, i, m, d) for i, m, d in change.photos],
            )

    async def occurrence_photo(
        self, tenant: str, number: int, photo_id: str
    ) -> tuple[str, bytes] | None:
        row = await self._pool.fetchrow(
            "SELECT media_type, data FROM occurrence_photos"
            " WHERE tenant = $1 AND number = $2 AND id = $3",
            tenant,
            number,
            photo_id,
        )
        return (row[0], bytes(row[1])) if row else None

    async def overdue_occurrences(self, now: float, limit: int = 1000) -> list[tuple[str, int]]:
        rows = await self._pool.fetch(
            "SELECT tenant, number FROM occurrences WHERE response_due < $1"
            " UNION SELECT tenant, number FROM occurrences WHERE resolution_due < $1 LIMIT $2",
            now,
            limit,
        )
        return [(r[0], r[1]) for r in rows]

    async def get_occurrence(self, tenant: str, number: int) -> StoredOccurrence | None:
        row = await self._pool.fetchrow(
            "SELECT number, version, doc, private FROM occurrences"
            " WHERE tenant = $1 AND number = $2",
            tenant,
            number,
        )
        return _row(row) if row else None

    async def occurrence_by_token(self, tenant: str, token: str) -> StoredOccurrence | None:
        row = await self._pool.fetchrow(
            "SELECT number, version, doc, private FROM occurrences"
            " WHERE token = $1 AND tenant = $2",
            token,
            tenant,
        )
        return _row(row) if row else None

    async def query_occurrences(self, tenant: str, query: OccurrenceQuery) -> OccurrencePage:
        check_query(query)
        narrowed = _Narrowed(
            tenant,
            "",
            (
                ("status", query.statuses),
                ("category", query.categories),
                ("grp", query.groups),
                ("priority", query.priorities),
                ("source", query.sources),
                ("area", query.areas),
            ),
            query.departments,
            (
                ("created_at", ">=", query.created_since),
                ("created_at", "<", query.created_until),
                ("updated_at", ">=", query.updated_since),
                ("updated_at", "<", query.updated_until),
            ),
        )
        where, params, param = narrowed.where, narrowed.params, narrowed.param
        if query.numbers is not None:
            where.append(f"number = ANY({param([int(n) for n in query.numbers])}::bigint[])")
        if query.open is not None:
            # a constant: a prepared statement's generic plan could not use the partial index
            # of open occurrences for a parameter
            where.append("open" if query.open else "NOT open")
        if query.rule_key is not None:
            where.append(f"rule_key = {param(query.rule_key)}")
        if query.overdue_at is not None:
            p = param(float(query.overdue_at))
            where.append(f"(response_due < {p} OR resolution_due < {p})")
        box = query_box(query)
        if box is not None:
            where.append(
                f"geom && ST_MakeEnvelope({param(box[0])}, {param(box[1])}, {param(box[2])},"
                f" {param(box[3])}, 4326)"
                f" AND lon BETWEEN {param(box[0])} AND {param(box[2])}"
                f" AND lat BETWEEN {param(box[1])} AND {param(box[3])}"
            )
        base = f"FROM occurrences WHERE {' AND '.join(where)}"
        select = (
            f"SELECT number, version, doc, private, lat, lon {base} ORDER BY {ORDERS[query.order]}"
        )
        if query.near is None:
            n = len(params)
            rows = await self._pool.fetch(
                f"{select} LIMIT ${n + 1} OFFSET ${n + 2}", *params, query.limit, query.offset
            )
            total = (
                await self._pool.fetchval(f"SELECT count(*) {base}", *params)
                if query.count
                else None
            )
            return OccurrencePage([_row(r) for r in rows], total)
        # The box selected candidates; the same distance as on SQLite decides, then the page.
        lat, lon, metres = query.near
        rows = [
            r
            for r in await self._pool.fetch(select, *params)
            if distance_m(lat, lon, r[4], r[5]) <= metres
        ]
        page = rows[query.offset : query.offset + query.limit]
        return OccurrencePage([_row(r) for r in page], len(rows) if query.count else None)

    async def occurrence_statistics(
        self, tenant: str, query: OccurrenceStatisticsQuery, now: float
    ) -> OccurrenceAggregates:
        narrowed = _Narrowed(
            tenant,
            "o.",
            (("category", query.categories), ("grp", query.groups), ("area", query.areas)),
            query.departments,
            (("created_at", ">=", query.created_since), ("created_at", "<", query.created_until)),
        )
        where, params = narrowed.where, narrowed.params
        chosen = " AND ".join(where)
        counted = "count(*) FILTER (WHERE o.open), count(*) FILTER (WHERE NOT o.open)"
        counts_sql = " UNION ALL ".join(
            [
                *(
                    f"SELECT '{dim}', o.{dim}, {counted} FROM occurrences o WHERE {chosen}"
                    f" GROUP BY o.{dim}"
                    for dim in ("category", "status", "area")
                ),
                f"SELECT 'department', d.department, {counted} FROM occurrences o"
                f" JOIN occurrence_departments d ON d.number = o.number WHERE {chosen}"
                " GROUP BY d.department",
            ]
        )
        now_param = f"${len(params) + 1}"  # the times' query alone takes it
        # percentile_cont leaves out the occurrences that have not met the deadline (NULL)
        times_sql = (
            "SELECT"
            + ",".join(
                f" count(o.{met}), avg(o.{met} - o.created_at),"
                f" percentile_cont({P90}) WITHIN GROUP (ORDER BY o.{met} - o.created_at),"
                f" count(*) FILTER (WHERE o.{met} <= o.{due}),"
                f" count(*) FILTER (WHERE o.{met} > o.{due}),"
                f" count(*) FILTER (WHERE o.{met} IS NULL AND o.{due} < {now_param})"
                for met, due in _MEASURES
            )
            + f" FROM occurrences o WHERE {chosen}"
        )
        async with (
            self._pool.acquire() as conn,
            # one snapshot: the counts and the times agree
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            rows = await conn.fetch(counts_sql, *params)
            row = await conn.fetchrow(times_sql, *params, float(now))
        counts = [(r[0], r[1], r[2], r[3]) for r in rows]
        figures = [DurationFigures(*row[6 * k : 6 * k + 6]) for k in range(len(_MEASURES))]
        return OccurrenceAggregates(
            sum(c[2] for c in counts if c[0] == "status"),
            sum(c[3] for c in counts if c[0] == "status"),
            counts,
            figures[0],
            figures[1],
        )

    async def occurrence_events(
        self,
        tenant: str,
        number: int | None = None,
        *,
        since: float | None = None,
        until: float | None = None,
        public: bool | None = None,
        kinds: list[str] | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        params: list[Any] = [tenant]
        where = ["tenant = $1"]
        for clause, value in (
            ("number = ", number),
            ("at >= ", since),
            ("at < ", until),
            ("public = ", public),
        ):
            if value is not None:
                params.append(value)
                where.append(f"{clause}${len(params)}")
        if kinds is not None:
            params.append(list(kinds))
            where.append(f"kind = ANY(${len(params)}::text[])")
        params.append(limit)
        rows = await self._pool.fetch(
            f"SELECT seq, number, doc FROM occurrence_events WHERE {' AND '.join(where)}"
            f" ORDER BY seq LIMIT ${len(params)}",
            *params,
        )
        return [{"seq": r[0], "number": r[1], **r[2]} for r in rows]

    # -- the message log and its senders (occurrences/dispatch/) -------------------------------

    async def claim_occurrence_messages(
        self, now: float, lease: float, limit: int = 20
    ) -> list[OccurrenceMessage]:
        # SKIP LOCKED: senders claiming at once split the due messages instead of queueing on
        # them; once committed, a claimed message is due only when its lease ends.
        rows = await self._pool.fetch(
            "UPDATE occurrence_messages m SET attempts = m.attempts + 1, next_at = $2"
            " FROM (SELECT seq FROM occurrence_messages"
            "  WHERE state = 'pending' AND next_at <= $1 ORDER BY next_at, seq LIMIT $3"
            "  FOR UPDATE SKIP LOCKED) due"
            " WHERE m.seq = due.seq"
            " RETURNING m.seq, m.tenant, m.number, m.state, m.attempts, m.next_at,"
            " m.created_at, m.doc, m.result",
            now,
            now + lease,
            limit,
        )
        return sorted((OccurrenceMessage(*r) for r in rows), key=lambda m: m.seq)

    async def settle_occurrence_message(
        self,
        seq: int,
        attempts: int,
        state: str,
        result: str,
        next_at: float | None = None,
    ) -> bool:
        check_settlement(state, next_at)
        status = await self._pool.execute(
            "UPDATE occurrence_messages SET state = $3, result = $4,"
            " next_at = COALESCE($5, next_at)"
            " WHERE seq = $1 AND attempts = $2 AND state = 'pending'",
            seq,
            attempts,
            state,
            result,
            next_at,
        )
        return status == "UPDATE 1"

    async def occurrence_messages(
        self, tenant: str, number: int | None = None, *, after: int = 0, limit: int = 100
    ) -> list[OccurrenceMessage]:
        params: list[Any] = [tenant, after, limit]
        where = "tenant = $1 AND seq > $2"
        if number is not None:
            params.append(number)
            where += " AND number = $4"
        rows = await self._pool.fetch(
            "SELECT seq, tenant, number, state, attempts, next_at, created_at, doc, result"
            f" FROM occurrence_messages WHERE {where} ORDER BY seq LIMIT $3",
            *params,
        )
        return [OccurrenceMessage(*r) for r in rows]

    async def occurrence_settings(self, tenant: str) -> list[tuple[str, str, Any]]:
        rows = await self._pool.fetch(
            "SELECT kind, key, doc FROM occurrence_settings WHERE tenant = $1 ORDER BY kind, key",
            tenant,
        )
        return [(r[0], r[1], r[2]) for r in rows]

    async def save_occurrence_setting(self, tenant: str, kind: str, key: str, doc: Any) -> None:
        check_tenant(tenant)
        await self._pool.execute(
            "INSERT INTO occurrence_settings(tenant, kind, key, doc) VALUES ($1, $2, $3,"
            " $4::jsonb) ON CONFLICT (tenant, kind, key) DO UPDATE SET doc = excluded.doc",
            tenant,
            kind,
            key,
            doc,
        )

    # -- the occurrences' hub entities (occurrences/entities.py) -------------------------------

    async def occurrences_to_mirror(
        self, *, after: int = 0, limit: int = 500, every: bool = False
    ) -> list[tuple[str, int, int, str]]:
        behind = "" if every else " AND mirrored_version < version"
        rows = await self._pool.fetch(
            "SELECT tenant, number, version, source FROM occurrences"
            f" WHERE number > $1{behind} ORDER BY number LIMIT $2",
            after,
            limit,
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def mark_occurrences_mirrored(self, marks: Sequence[tuple[str, int, int]]) -> None:
        if not marks:
            return
        await self._pool.execute(
            "UPDATE occurrences o SET mirrored_version = m.version"
            " FROM unnest($1::text[], $2::bigint[], $3::int[]) AS m(tenant, number, version)"
            " WHERE o.tenant = m.tenant AND o.number = m.number"
            " AND o.mirrored_version < m.version",
            [t for t, _, _ in marks],
            [n for _, n, _ in marks],
            [v for _, _, v in marks],
        )

    # -- sensor rules' watches (occurrences/rules.py) -------------------------------------------

    async def rule_watches(self, tenant: str) -> list[RuleWatch]:
        rows = await self._pool.fetch(
            "SELECT rule, entity, state, since, clear_since, number FROM rule_watch"
            " WHERE tenant = $1 ORDER BY rule, entity",
            tenant,
        )
        return [RuleWatch(*r) for r in rows]

    async def save_rule_watches(
        self,
        tenant: str,
        saved: list[RuleWatch],
        dropped: list[tuple[str, str]],
        now: float,
    ) -> None:
        check_tenant(tenant)
        async with self._pool.acquire() as conn, conn.transaction():
            if dropped:
                await conn.execute(
                    "DELETE FROM rule_watch w USING unnest($2::text[], $3::text[]) AS d(r, e)"
                    " WHERE w.tenant = $1 AND w.rule = d.r AND w.entity = d.e",
                    tenant,
                    [r for r, _ in dropped],
                    [e for _, e in dropped],
                )
            if saved:
                await conn.executemany(
                    "INSERT INTO rule_watch(tenant, rule, entity, state, since, clear_since,"
                    " number, written_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                    " ON CONFLICT (tenant, rule, entity) DO UPDATE SET state = excluded.state,"
                    " since = excluded.since, clear_since = excluded.clear_since,"
                    " number = excluded.number, written_at = excluded.written_at",
                    [
                        (tenant, w.rule, w.entity, w.state, w.since, w.clear_since, w.number, now)
                        for w in saved
                    ],
                )

    async def claim_rule_lease(self, owner: str, now: float, lease: float) -> bool:
        # One statement: of two workers claiming together, the row lock lets one through and
        # the other then sees the lease taken (its WHERE fails), never both.
        row = await self._pool.fetchval(
            "INSERT INTO rule_lease(name, owner, until) VALUES ('rules', $1, $2)"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
            " WHERE rule_lease.owner = excluded.owner OR rule_lease.until < $3"
            " RETURNING owner",
            owner,
            now + lease,
            now,
        )
        return row is not None

    async def release_rule_lease(self, owner: str) -> None:
        await self._pool.execute(
            "DELETE FROM rule_lease WHERE name = 'rules' AND owner = $1", owner
        )

    async def tenant_names(self) -> list[str]:
        rows = await self._pool.fetch("SELECT name FROM tenants ORDER BY name")
        return ["", *(r[0] for r in rows if r[0] != "")]
