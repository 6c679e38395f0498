"""Access-control storage on SQLite (accounts, API keys, sessions, the audit log): a mixin of
SqliteStore. Writes go through the one writer, point lookups run inline, lists on a reader.
One process uses the file, so nothing is announced: the "auth" topic has no other listener."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from cidade.ngsild.timefmt import now as now_iso
from cidade.store.access import (
    audit_event,
    audit_rows,
    key_columns,
    one_session_filter,
    record_key,
    session_columns,
)
from cidade.store.base import AuditQuery

if TYPE_CHECKING:
    from cidade.store.sqlite.database import Database


class SqliteAuth:
    db: Database

    # -- accounts -------------------------------------------------------------------------------

    async def save_account(self, account: dict[str, Any], *, create: bool) -> bool:
        name = record_key(account, "name", "an account")
        doc = orjson.dumps(account).decode()
        if create:
            sql = "INSERT OR IGNORE INTO accounts(name, doc) VALUES (?, ?)"
            params: tuple = (name, doc)
        else:
            sql = "UPDATE accounts SET doc = ? WHERE name = ?"
            params = (doc, name)
        return await self.db.write(lambda c: c.execute(sql, params).rowcount == 1)

    async def get_account(self, name: str) -> dict[str, Any] | None:
        row = self.db.read_now(
            lambda c: c.execute("SELECT doc FROM accounts WHERE name = ?", (name,)).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def list_accounts(self) -> list[dict[str, Any]]:
        rows = await self.db.read(
            lambda c: c.execute("SELECT doc FROM accounts ORDER BY name").fetchall()
        )
        return [orjson.loads(r[0]) for r in rows]

    async def delete_account(self, name: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            conn.execute("DELETE FROM sessions WHERE account = ?", (name,))
            return conn.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount == 1

        return await self.db.write(run)

    # -- API keys -------------------------------------------------------------------------------

    async def save_api_key(self, key: dict[str, Any], *, create: bool) -> bool:
        key_id, owner, doc = key_columns(key)
        if create:
            sql = "INSERT OR IGNORE INTO api_keys(id, owner, created, doc) VALUES (?, ?, ?, ?)"
            params: tuple = (key_id, owner, now_iso(), doc)
        else:  # a replaced key keeps its place among its owner's
            sql = "UPDATE api_keys SET owner = ?, doc = ? WHERE id = ?"
            params = (owner, doc, key_id)
        return await self.db.write(lambda c: c.execute(sql, params).rowcount == 1)

    async def get_api_key(self, key_id: str) -> dict[str, Any] | None:
        row = self.db.read_now(
            lambda c: c.execute("SELECT doc FROM api_keys WHERE id = ?", (key_id,)).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def list_api_keys(self, owner: str | None = None) -> list[dict[str, Any]]:
        if owner is None:
            sql, params = "SELECT doc FROM api_keys ORDER BY created, rowid", ()
        else:
            sql = "SELECT doc FROM api_keys WHERE owner = ? ORDER BY created, rowid"
            params = (owner,)
        rows = await self.db.read(lambda c: c.execute(sql, params).fetchall())
        return [orjson.loads(r[0]) for r in rows]

    # -- sessions -------------------------------------------------------------------------------

    async def save_session(self, session: dict[str, Any]) -> None:
        row = session_columns(session)

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO sessions(id, account, expires, doc) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET account = excluded.account,"
                " expires = excluded.expires, doc = excluded.doc",
                row,
            )

        await self.db.write(run)

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        row = self.db.read_now(
            lambda c: c.execute("SELECT doc FROM sessions WHERE id = ?", (session_id,)).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def delete_sessions(
        self,
        *,
        session_id: str | None = None,
        account: str | None = None,
        expired_before: float | None = None,
    ) -> int:
        one_session_filter(session_id, account, expired_before)
        if session_id is not None:
            sql, value = "DELETE FROM sessions WHERE id = ?", session_id
        elif account is not None:
            sql, value = "DELETE FROM sessions WHERE account = ?", account
        else:
            sql, value = "DELETE FROM sessions WHERE expires < ?", expired_before
        return await self.db.write(lambda c: c.execute(sql, (value,)).rowcount)

    # -- failed log-ins ---------------------------------------------------------------------

    async def add_login_failure(self, name_key: str, address_key: str, at: float) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO login_failures(name_key, address_key, at) VALUES (?, ?, ?)",
                (name_key, address_key, at),
            )

        await self.db.write(run)

    async def login_failures(
        self, name_key: str, address_key: str, since: float
    ) -> tuple[list[float], list[float]]:
        rows = self.db.read_now(
            lambda c: c.execute(
                "SELECT name_key, at FROM login_failures WHERE address_key = ? AND at >= ?"
                " ORDER BY at",
                (address_key, since),
            ).fetchall()
        )
        return [at for key, at in rows if key == name_key], [at for _, at in rows]

    async def forget_login_failures(
        self, *, before: float, name_key: str | None = None, address_key: str | None = None
    ) -> None:
        def run(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM login_failures WHERE at < ?", (before,))
            if name_key is not None and address_key is not None:
                conn.execute(
                    "DELETE FROM login_failures WHERE address_key = ? AND name_key = ?",
                    (address_key, name_key),
                )

        await self.db.write(run)

    # -- the audit log --------------------------------------------------------------------------

    async def append_audit(self, events: Sequence[dict[str, Any]]) -> None:
        rows = audit_rows(events)
        if not rows:
            return

        def run(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO audit_log(at, tenant, actor, event, outcome, target, detail)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

        await self.db.write(run)

    async def audit_events(self, query: AuditQuery) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if query.tenants is not None:
            where.append(f"tenant IN ({','.join('?' * len(query.tenants))})")
            params.extend(query.tenants)
        for column, op, value in (
            ("event", "=", query.event),
            ("actor", "=", query.actor),
            ("at", ">=", query.since),
            ("at", "<", query.until),
            ("seq", "<", query.before_seq),
        ):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = (
            "SELECT seq, at, tenant, actor, event, outcome, target, detail FROM audit_log"
            f"{clause} ORDER BY seq DESC LIMIT ?"
        )
        params.append(max(int(query.limit), 0))
        rows = await self.db.read(lambda c: c.execute(sql, params).fetchall())
        return [
            audit_event(r[0], (*r[1:7], None if r[7] is None else orjson.loads(r[7]))) for r in rows
        ]
