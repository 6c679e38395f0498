"""Occurrence storage on SQLite (docs/occurrences.md): a mixin of SqliteStore. A write runs its
function on the writer thread, in the savepoint the writer gives every call, so a refused one
leaves nothing; its history events and messages commit with it."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from cidade.store.devices import check_tenant
from cidade.store.occurrences import (
    ORDERS,
    P90,
    DurationFigures,
    OccurrenceAggregates,
    OccurrenceApply,
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
    occurrence_columns,
    percentile_between,
    query_box,
)

if TYPE_CHECKING:
    from cidade.store.sqlite.database import Database

_COLUMNS = (
    "category, grp, status, open, priority, source, area, lat, lon, created_at, updated_at,"
    " response_due, resolution_due, token, rule_key, responded_at, resolved_at,"
    " response_deadline, resolution_deadline"
)
_NAMES = [c.strip() for c in _COLUMNS.split(",")]


def _duplicate_lookup(query: OccurrenceQuery) -> bool:
    """Whether a query asks what OccurrenceService.duplicates asks: open occurrences of some
    groups created since a time (near a point)."""
    return bool(query.open) and query.groups is not None and query.created_since is not None


# (met, due) columns of the response and resolution deadlines, in that order.
_MEASURES = (("responded_at", "response_deadline"), ("resolved_at", "resolution_deadline"))


def _row(row: Any) -> StoredOccurrence:
    return StoredOccurrence(row[0], row[1], orjson.loads(row[2]), orjson.loads(row[3]))


def _in(column: str, values: Any, where: list[str], params: list[Any]) -> None:
    values = list(values)
    where.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "0")
    params.extend(values)


def _narrowed(
    tenant: str,
    among: Iterable[tuple[str, Sequence[Any] | None]],
    departments: Sequence[str] | None,
    bounds: Iterable[tuple[str, str, float | None]],
) -> tuple[list[str], list[Any]]:
    """(conditions, parameters) of a tenant's occurrences narrowed by what is given: a column
    among values, held by one of the departments, a column's bounds (None: not narrowed)."""
    where, params = ["o.tenant = ?"], [tenant]
    for column, values in among:
        if values is not None:
            _in(column, values, where, params)
    if departments is not None:
        where.append(
            "o.number IN (SELECT number FROM occurrence_departments WHERE department IN"
            f" ({', '.join('?' * len(departments))}))"
        )
        params.extend(departments)
    for column, op, value in bounds:
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    return where, params


class SqliteOccurrences:
    db: Database

    async def write_occurrence(
        self, tenant: str, number: int | None, apply: OccurrenceApply
    ) -> StoredOccurrence:
        check_tenant(tenant)

        def run(conn: sqlite3.Connection) -> StoredOccurrence:
            current = None
            if number is None:
                # The number AUTOINCREMENT would give: the write transaction holds the
                # database, so none can take it before the row below does (one INSERT of the
                # whole row; an empty row first, then updated, cost every index twice).
                new_number = conn.execute(
                    "SELECT max(coalesce((SELECT seq FROM sqlite_sequence"
                    " WHERE name = 'occurrences'), 0), coalesce(max(number), 0)) + 1"
                    " FROM occurrences"
                ).fetchone()[0]
            else:
                row = conn.execute(
                    "SELECT number, version, doc, private FROM occurrences"
                    " WHERE tenant = ? AND number = ?",
                    (tenant, number),
                ).fetchone()
                if row is None:
                    raise LookupError(number)
                current = _row(row)
                new_number = number
            change = apply(current, new_number)
            version = (current.version if current else 0) + 1
            cols = occurrence_columns(change.doc)
            departments = cols.pop("departments")
            values = (
                version,
                orjson.dumps(change.doc),
                orjson.dumps(change.private),
                *(cols[n] for n in _NAMES),
                new_number,
            )
            try:
                if current is None:
                    conn.execute(
                        f"INSERT INTO occurrences(version, doc, private, {_COLUMNS}, number,"
                        f" tenant) VALUES ({', '.join('?' * (len(values) + 1))})",
                        (*values, tenant),
                    )
                else:
                    conn.execute(
                        f"UPDATE occurrences SET version = ?, doc = ?, private = ?,"
                        f" {', '.join(f'{n} = ?' for n in _NAMES)} WHERE number = ?",
                        values,
                    )
            except sqlite3.IntegrityError as exc:
                if "rule_key" in str(exc):
                    raise OccurrenceConflict(cols["rule_key"]) from None
                raise
            if current is not None:
                conn.execute("DELETE FROM occurrence_geo WHERE number = ?", (new_number,))
            if cols["lat"] is not None and cols["lon"] is not None:
                conn.execute(
                    "INSERT INTO occurrence_geo VALUES (?, ?, ?, ?, ?)",
                    (new_number, cols["lon"], cols["lon"], cols["lat"], cols["lat"]),
                )
            held: set[str] = set()
            if current is not None:
                held = {
                    r[0]
                    for r in conn.execute(
                        "SELECT department FROM occurrence_departments WHERE number = ?",
                        (new_number,),
                    )
                }
            gone = held - set(departments)
            if gone:
                conn.executemany(
                    "DELETE FROM occurrence_departments WHERE number = ? AND department = ?",
                    [(new_number, d) for d in gone],
                )
            conn.executemany(
                "INSERT INTO occurrence_departments(number, department) VALUES (?, ?)",
                [(new_number, d) for d in departments if d not in held],
            )
            _append(conn, tenant, new_number, change.events, change.messages)
            if change.photos:
                conn.executemany(
                    "INSERT INTO occurrence_photos(tenant, number, id, media_type, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(tenant, new_number, i, t, d) for i, t, d in change.photos],
                )
            return StoredOccurrence(new_number, version, change.doc, change.private)

        return await self.db.write(run)

    async def get_occurrence(self, tenant: str, number: int) -> StoredOccurrence | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT number, version, doc, private FROM occurrences"
                " WHERE tenant = ? AND number = ? AND version > 0",
                (tenant, number),
            ).fetchone()
        )
        return _row(row) if row else None

    async def occurrence_by_token(self, tenant: str, token: str) -> StoredOccurrence | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT number, version, doc, private FROM occurrences"
                " WHERE token = ? AND tenant = ?",
                (token, tenant),
            ).fetchone()
        )
        return _row(row) if row else None

    async def occurrence_photo(
        self, tenant: str, number: int, photo_id: str
    ) -> tuple[str, bytes] | None:
        row = await self.db.read(
            lambda c: c.execute(
                "SELECT media_type, data FROM occurrence_photos"
                " WHERE tenant = ? AND number = ? AND id = ?",
                (tenant, number, photo_id),
            ).fetchone()
        )
        return (row[0], bytes(row[1])) if row else None

    async def overdue_occurrences(self, now: float, limit: int = 1000) -> list[tuple[str, int]]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT tenant, number FROM occurrences WHERE response_due < ?"
                " UNION SELECT tenant, number FROM occurrences WHERE resolution_due < ?"
                " LIMIT ?",
                (now, now, limit),
            ).fetchall()
        )
        return [(r[0], r[1]) for r in rows]

    async def query_occurrences(self, tenant: str, query: OccurrenceQuery) -> OccurrencePage:
        check_query(query)
        where, params = _narrowed(
            tenant,
            (
                ("o.number", query.numbers),
                ("o.status", query.statuses),
                ("o.category", query.categories),
                ("o.grp", query.groups),
                ("o.priority", query.priorities),
                ("o.source", query.sources),
                ("o.area", query.areas),
            ),
            query.departments,
            (
                ("o.created_at", ">=", query.created_since),
                ("o.created_at", "<", query.created_until),
                ("o.updated_at", ">=", query.updated_since),
                ("o.updated_at", "<", query.updated_until),
            ),
        )
        if query.open is not None:
            # a constant, as the partial index of open occurrences needs to be usable
            where.append(f"o.open = {1 if query.open else 0}")
        if query.rule_key is not None:
            where.append("o.rule_key = ?")
            params.append(query.rule_key)
        if query.overdue_at is not None:
            where.append("(o.response_due < ? OR o.resolution_due < ?)")
            params.extend([query.overdue_at, query.overdue_at])
        box = query_box(query)
        source = "occurrences o"
        if box is not None and query.near is not None and _duplicate_lookup(query):
            # The open occurrences of a group in the box's band of latitude: their index
            # (0019) carries the point and the creation time, decided there. Named, as the
            # planner, with no statistics, would rather walk the creation time's index for
            # its order and read every row since then.
            source = "occurrences o INDEXED BY occurrences_open_band"
            where.append("o.lat BETWEEN ? AND ? AND o.lon BETWEEN ? AND ?")
            params.extend([box[1], box[3], box[0], box[2]])
        elif box is not None:
            where.append("g.min_lon >= ? AND g.max_lon <= ? AND g.min_lat >= ? AND g.max_lat <= ?")
            params.extend([box[0], box[2], box[1], box[3]])
            # Near a point, the points in its small box first (CROSS JOIN keeps that order):
            # left to itself the planner may walk the creation time's index and look up the
            # point of every occurrence since then. A large box is left to the planner.
            join = "CROSS JOIN" if query.near is not None else "JOIN"
            source = f"occurrence_geo g {join} occurrences o ON o.number = g.number"
        order = ORDERS[query.order].replace("created_at", "o.created_at")
        order = order.replace("updated_at", "o.updated_at").replace("number", "o.number")
        base = f"FROM {source} WHERE {' AND '.join(where)}"
        select = (
            f"SELECT o.number, o.version, o.doc, o.private, o.lat, o.lon {base} ORDER BY {order}"
        )
        near = query.near

        def run(conn: sqlite3.Connection) -> tuple[list[StoredOccurrence], int | None]:
            if near is None:
                rows = conn.execute(
                    f"{select} LIMIT ? OFFSET ?", (*params, query.limit, query.offset)
                ).fetchall()
                total = (
                    conn.execute(f"SELECT count(*) {base}", params).fetchone()[0]
                    if query.count
                    else None
                )
                return [_row(r) for r in rows], total
            # The box selected candidates; the distance decides, then the page is cut.
            lat, lon, metres = near
            rows = [
                r
                for r in conn.execute(select, params)
                if distance_m(lat, lon, r[4], r[5]) <= metres
            ]
            page = rows[query.offset : query.offset + query.limit]
            return [_row(r) for r in page], len(rows) if query.count else None

        items, total = await self.db.read(run)
        return OccurrencePage(items, total)

    async def occurrence_statistics(
        self, tenant: str, query: OccurrenceStatisticsQuery, now: float
    ) -> OccurrenceAggregates:
        where, params = _narrowed(
            tenant,
            (("o.category", query.categories), ("o.grp", query.groups), ("o.area", query.areas)),
            query.departments,
            (
                ("o.created_at", ">=", query.created_since),
                ("o.created_at", "<", query.created_until),
            ),
        )
        chosen = " AND ".join(where)
        counted = "sum(o.open), count(*) - sum(o.open)"
        counts_sql = " UNION ALL ".join(
            [
                *(
                    f"SELECT '{dim}', o.{col}, {counted} FROM occurrences o WHERE {chosen}"
                    f" GROUP BY o.{col}"
                    for dim, col in (
                        ("category", "category"),
                        ("status", "status"),
                        ("area", "area"),
                    )
                ),
                f"SELECT 'department', d.department, {counted} FROM occurrences o"
                f" JOIN occurrence_departments d ON d.number = o.number WHERE {chosen}"
                " GROUP BY d.department",
            ]
        )
        times_sql = (
            "SELECT"
            + ",".join(
                f" count(o.{met}), avg(o.{met} - o.created_at), total(o.{met} <= o.{due}),"
                f" total(o.{met} > o.{due}), total(o.{met} IS NULL AND o.{due} < ?)"
                for met, due in _MEASURES
            )
            + f" FROM occurrences o WHERE {chosen}"
        )

        def run(conn: sqlite3.Connection) -> OccurrenceAggregates:
            conn.execute("BEGIN")  # one snapshot: the counts and the times agree
            try:
                counts = [
                    (r[0], r[1], int(r[2]), int(r[3])) for r in conn.execute(counts_sql, params * 4)
                ]
                row = conn.execute(times_sql, [now] * len(_MEASURES) + params).fetchone()
                figures = []
                for k, (met, _) in enumerate(_MEASURES):
                    n, mean, within, late, overdue = row[5 * k : 5 * k + 5]
                    p90 = None
                    if n:
                        # percentile_cont's ranks: the two around P90 * (n - 1), interpolated
                        at = int(P90 * (n - 1))
                        nearest = [
                            r[0]
                            for r in conn.execute(
                                f"SELECT o.{met} - o.created_at AS s FROM occurrences o"
                                f" WHERE {chosen} AND o.{met} IS NOT NULL"
                                " ORDER BY s LIMIT 2 OFFSET ?",
                                (*params, at),
                            )
                        ]
                        p90 = percentile_between(nearest, P90 * (n - 1) - at)
                    figures.append(
                        DurationFigures(n, mean, p90, int(within), int(late), int(overdue))
                    )
            finally:
                conn.execute("COMMIT")
            open_ = sum(c[2] for c in counts if c[0] == "status")
            closed = sum(c[3] for c in counts if c[0] == "status")
            return OccurrenceAggregates(open_, closed, counts, figures[0], figures[1])

        return await self.db.read(run)

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
        where, params = ["tenant = ?"], [tenant]
        if number is not None:
            where.append("number = ?")
            params.append(number)
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if until is not None:
            where.append("at < ?")
            params.append(until)
        if public is not None:
            where.append("public = ?")
            params.append(1 if public else 0)
        if kinds is not None:
            _in("kind", kinds, where, params)
        sql = f"SELECT seq, number, doc FROM occurrence_events WHERE {' AND '.join(where)}"
        sql += " ORDER BY seq LIMIT ?"
        rows = await self.db.read(lambda c: c.execute(sql, (*params, limit)).fetchall())
        return [{"seq": r[0], "number": r[1], **orjson.loads(r[2])} for r in rows]

    # -- the message log and its senders (occurrences/dispatch/) -------------------------------

    async def claim_occurrence_messages(
        self, now: float, lease: float, limit: int = 20
    ) -> list[OccurrenceMessage]:
        # One statement in the writer's transaction (BEGIN IMMEDIATE): two claims, even from
        # two processes on one file, are one after the other, and the second finds the first's
        # messages leased.
        rows = await self.db.write(
            lambda c: c.execute(
                "UPDATE occurrence_messages SET attempts = attempts + 1, next_at = ?"
                " WHERE seq IN (SELECT seq FROM occurrence_messages"
                "  WHERE state = 'pending' AND next_at <= ? ORDER BY next_at, seq LIMIT ?)"
                f" RETURNING {_MESSAGE_COLUMNS}",
                (now + lease, now, limit),
            ).fetchall()
        )
        return sorted((_message(r) for r in rows), key=lambda m: m.seq)

    async def settle_occurrence_message(
        self,
        seq: int,
        attempts: int,
        state: str,
        result: str,
        next_at: float | None = None,
    ) -> bool:
        check_settlement(state, next_at)
        return bool(
            await self.db.write(
                lambda c: (
                    c.execute(
                        "UPDATE occurrence_messages SET state = ?, result = ?,"
                        " next_at = COALESCE(?, next_at)"
                        " WHERE seq = ? AND attempts = ? AND state = 'pending'",
                        (state, result, next_at, seq, attempts),
                    ).rowcount
                )
            )
        )

    async def occurrence_messages(
        self, tenant: str, number: int | None = None, *, after: int = 0, limit: int = 100
    ) -> list[OccurrenceMessage]:
        where, params = ["tenant = ?", "seq > ?"], [tenant, after]
        if number is not None:
            where.append("number = ?")
            params.append(number)
        rows = await self.db.read(
            lambda c: c.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM occurrence_messages"
                f" WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
                (*params, limit),
            ).fetchall()
        )
        return [_message(r) for r in rows]

    # -- settings a tenant's administrators change through the API -----------------------------

    async def occurrence_settings(self, tenant: str) -> list[tuple[str, str, Any]]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT kind, key, doc FROM occurrence_settings WHERE tenant = ?"
                " ORDER BY kind, key",
                (tenant,),
            ).fetchall()
        )
        return [(r[0], r[1], None if r[2] is None else orjson.loads(r[2])) for r in rows]

    async def save_occurrence_setting(self, tenant: str, kind: str, key: str, doc: Any) -> None:
        check_tenant(tenant)
        data = None if doc is None else orjson.dumps(doc)
        await self.db.write(
            lambda c: (
                c.execute(
                    "INSERT INTO occurrence_settings(tenant, kind, key, doc) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (tenant, kind, key) DO UPDATE SET doc = excluded.doc",
                    (tenant, kind, key, data),
                ).rowcount
            )
        )

    # -- the occurrences' hub entities (occurrences/entities.py) -------------------------------

    async def occurrences_to_mirror(
        self, *, after: int = 0, limit: int = 500, every: bool = False
    ) -> list[tuple[str, int, int, str]]:
        behind = "" if every else " AND mirrored_version < version"
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT tenant, number, version, source FROM occurrences"
                f" WHERE number > ? AND version > 0{behind} ORDER BY number LIMIT ?",
                (after, limit),
            ).fetchall()
        )
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    async def mark_occurrences_mirrored(self, marks: Sequence[tuple[str, int, int]]) -> None:
        rows = [(version, tenant, number, version) for tenant, number, version in marks]
        if rows:
            await self.db.write(
                lambda c: (
                    c.executemany(
                        "UPDATE occurrences SET mirrored_version = ?"
                        " WHERE tenant = ? AND number = ? AND mirrored_version < ?",
                        rows,
                    ).rowcount
                )
            )

    # -- sensor rules' watches (occurrences/rules.py) -------------------------------------------

    async def rule_watches(self, tenant: str) -> list[RuleWatch]:
        rows = await self.db.read(
            lambda c: c.execute(
                "SELECT rule, entity, state, since, clear_since, number FROM rule_watch"
                " WHERE tenant = ? ORDER BY rule, entity",
                (tenant,),
            ).fetchall()
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

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM rule_watch WHERE tenant = ? AND rule = ? AND entity = ?",
                [(tenant, rule, entity) for rule, entity in dropped],
            )
            conn.executemany(
                "INSERT INTO rule_watch(tenant, rule, entity, state, since, clear_since, number,"
                " written_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (tenant, rule, entity) DO UPDATE SET state = excluded.state,"
                " since = excluded.since, clear_since = excluded.clear_since,"
                " number = excluded.number, written_at = excluded.written_at",
                [
                    (tenant, w.rule, w.entity, w.state, w.since, w.clear_since, w.number, now)
                    for w in saved
                ],
            )

        await self.db.write(run)

    async def claim_rule_lease(self, owner: str, now: float, lease: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "INSERT INTO rule_lease(name, owner, until) VALUES ('rules', ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
                " WHERE rule_lease.owner = excluded.owner OR rule_lease.until < ?"
                " RETURNING owner",
                (owner, now + lease, now),
            ).fetchone()
            return row is not None

        return await self.db.write(run)

    async def release_rule_lease(self, owner: str) -> None:
        await self.db.write(
            lambda c: (
                c.execute(
                    "DELETE FROM rule_lease WHERE name = 'rules' AND owner = ?", (owner,)
                ).rowcount
            )
        )

    async def tenant_names(self) -> list[str]:
        rows = await self.db.read(
            lambda c: c.execute("SELECT name FROM tenants ORDER BY name").fetchall()
        )
        return ["", *(r[0] for r in rows if r[0] != "")]


_MESSAGE_COLUMNS = "seq, tenant, number, state, attempts, next_at, created_at, doc, result"


def _message(row: Any) -> OccurrenceMessage:
    return OccurrenceMessage(*row[:7], orjson.loads(row[7]), row[8])


def _append(
    conn: sqlite3.Connection,
    tenant: str,
    number: int,
    events: list[dict[str, Any]],
    messages: list[dict[str, Any]],
) -> None:
    from cidade.store.occurrences import epoch

    if events:
        conn.executemany(
            "INSERT INTO occurrence_events(tenant, number, at, kind, public, doc)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (tenant, number, epoch(e["at"]), e["kind"], bool(e.get("public")), orjson.dumps(e))
                for e in events
            ],
        )
    if messages:
        conn.executemany(
            "INSERT INTO occurrence_messages(tenant, number, state, next_at, created_at, doc)"
            " VALUES (?, ?, 'pending', ?, ?, ?)",
            [(tenant, number, epoch(m["at"]), epoch(m["at"]), orjson.dumps(m)) for m in messages],
        )
