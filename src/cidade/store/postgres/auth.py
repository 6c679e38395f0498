"""Access-control storage on PostgreSQL (accounts, API keys, sessions, the audit log): a mixin
of PostgresStore. Every change of an account or a key is announced on the store's NOTIFY
channel as "auth" in the transaction that makes it, so every worker drops what it cached."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from cidade.store.access import (
    audit_event,
    audit_rows,
    key_columns,
    one_session_filter,
    record_key,
    session_columns,
)
from cidade.store.base import AuditQuery


def _count(status: str) -> int:
    """The row count of a command status ("INSERT 0 1", "DELETE 3")."""
    return int(status.split()[-1])


class PostgresAuth:
    channel: str  # PostgresStore's NOTIFY channel and its (open) pool
    _pool: asyncpg.Pool

    async def _announce(self, conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT pg_notify($1, 'auth')", self.channel)

    # -- accounts -------------------------------------------------------------------------------

    async def save_account(self, account: dict[str, Any], *, create: bool) -> bool:
        name = record_key(account, "name", "an account")
        if create:
            sql = "INSERT INTO accounts(name, doc) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        else:
            sql = "UPDATE accounts SET doc = $2 WHERE name = $1"
        async with self._pool.acquire() as conn, conn.transaction():
            if _count(await conn.execute(sql, name, account)) != 1:
                return False
            await self._announce(conn)
        return True

    async def get_account(self, name: str) -> dict[str, Any] | None:
        return await self._pool.fetchval("SELECT doc FROM accounts WHERE name = $1", name)

    async def list_accounts(self) -> list[dict[str, Any]]:
        rows = await self._pool.fetch("SELECT doc FROM accounts ORDER BY name")
        return [r["doc"] for r in rows]

    async def delete_account(self, name: str) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM sessions WHERE account = $1", name)
            if _count(await conn.execute("DELETE FROM accounts WHERE name = $1", name)) != 1:
                return False
            await self._announce(conn)
        return True

    # -- API keys -------------------------------------------------------------------------------

    async def save_api_key(self, key: dict[str, Any], *, create: bool) -> bool:
        key_id, owner, doc = key_columns(key)
        if create:
            sql = (
                "INSERT INTO api_keys(id, owner, doc) VALUES ($1, $2, $3::text::jsonb)"
                " ON CONFLICT DO NOTHING"
            )
        else:  # a replaced key keeps its place among its owner's
            sql = "UPDATE api_keys SET owner = $2, doc = $3::text::jsonb WHERE id = $1"
        async with self._pool.acquire() as conn, conn.transaction():
            if _count(await conn.execute(sql, key_id, owner, doc)) != 1:
                return False
            await self._announce(conn)
        return True

    async def get_api_key(self, key_id: str) -> dict[str, Any] | None:
        return await self._pool.fetchval("SELECT doc FROM api_keys WHERE id = $1", key_id)

    async def list_api_keys(self, owner: str | None = None) -> list[dict[str, Any]]:
        if owner is None:
            rows = await self._pool.fetch("SELECT doc FROM api_keys ORDER BY created, seq")
        else:
            rows = await self._pool.fetch(
                "SELECT doc FROM api_keys WHERE owner = $1 ORDER BY created, seq", owner
            )
        return [r["doc"] for r in rows]

    # -- sessions -------------------------------------------------------------------------------

    async def save_session(self, session: dict[str, Any]) -> None:
        await self._pool.execute(
            "INSERT INTO sessions(id, account, expires, doc) VALUES ($1, $2, $3, $4::text::jsonb)"
            " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
            " expires = excluded.expires, doc = excluded.doc",
            *session_columns(session),
        )

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        return await self._pool.fetchval("SELECT doc FROM sessions WHERE id = $1", session_id)

    async def delete_sessions(
        self,
        *,
        session_id: str | None = None,
        account: str | None = None,
        expired_before: float | None = None,
    ) -> int:
        one_session_filter(session_id, account, expired_before)
        if session_id is not None:
            status = await self._pool.execute("DELETE FROM sessions WHERE id = $1", session_id)
        elif account is not None:
            status = await self._pool.execute("DELETE FROM sessions WHERE account = $1", account)
        else:
            assert expired_before is not None
            status = await self._pool.execute(
                "DELETE FROM sessions WHERE expires < $1", float(expired_before)
            )
        return _count(status)

    # -- failed log-ins ---------------------------------------------------------------------

    async def add_login_failure(self, name_key: str, address_key: str, at: float) -> None:
        await self._pool.execute(
            "INSERT INTO login_failures(name_key, address_key, at) VALUES ($1, $2, $3)",
            name_key,
            address_key,
            float(at),
        )

    async def login_failures(
        self, name_key: str, address_key: str, since: float
    ) -> tuple[list[float], list[float]]:
        rows = await self._pool.fetch(
            "SELECT name_key, at FROM login_failures WHERE address_key = $1 AND at >= $2"
            " ORDER BY at",
            address_key,
            float(since),
        )
        return [r["at"] for r in rows if r["name_key"] == name_key], [r["at"] for r in rows]

    async def forget_login_failures(
        self, *, before: float, name_key: str | None = None, address_key: str | None = None
    ) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM login_failures WHERE at < $1", float(before))
            if name_key is not None and address_key is not None:
                await conn.execute(
                    "DELETE FROM login_failures WHERE address_key = $1 AND name_key = $2",
                    address_key,
                    name_key,
                )

    # -- the audit log --------------------------------------------------------------------------

    async def append_audit(self, events: Sequence[dict[str, Any]]) -> None:
        rows = audit_rows(events)
        if not rows:
            return
        columns = list(zip(*rows, strict=True))
        # In the order given: the log's sequence numbers follow the ordinality.
        await self._pool.execute(
            "INSERT INTO audit_log(at, tenant, actor, event, outcome, target, detail)"
            " SELECT u.at, u.tenant, u.actor, u.event, u.outcome, u.target, u.detail::jsonb"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::text[]) WITH ORDINALITY"
            " AS u(at, tenant, actor, event, outcome, target, detail, n) ORDER BY u.n",
            *(list(c) for c in columns),
        )

    async def audit_events(self, query: AuditQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if query.tenants is not None:
            params.append(list(query.tenants))
            where.append(f"tenant = ANY(${len(params)}::text[])")
        for column, op, value in (
            ("event", "=", query.event),
            ("actor", "=", query.actor),
            ("at", ">=", query.since),
            ("at", "<", query.until),
            ("seq", "<", query.before_seq),
        ):
            if value is not None:
                params.append(value)
                where.append(f"{column} {op} ${len(params)}")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        params.append(max(int(query.limit), 0))
        rows = await self._pool.fetch(
            "SELECT seq, at, tenant, actor, event, outcome, target, detail FROM audit_log"
            f"{clause} ORDER BY seq DESC LIMIT ${len(params)}",
            *params,
        )
        return [audit_event(r[0], tuple(r)[1:]) for r in rows]
