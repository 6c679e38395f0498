"""Device storage on SQLite (the IoT agent's service groups and devices): a mixin of
SqliteStore. Writes go through the one writer, point lookups run inline, lists on a reader.
One process uses the file, so nothing is announced: the "devices" topic has no other listener."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import orjson

from cidade.store.devices import check_page, check_tenant, device_columns, group_columns

if TYPE_CHECKING:
    from cidade.store.sqlite.database import Database


class SqliteDevices:
    db: Database

    # -- service groups -------------------------------------------------------------------------

    async def save_service_group(self, tenant: str, group: dict[str, Any], *, create: bool) -> bool:
        check_tenant(tenant)
        apikey, resource, doc = group_columns(group)
        if create:  # the unique (apikey, resource) index refuses a pair of any tenant
            sql = (
                "INSERT OR IGNORE INTO service_groups(tenant, apikey, resource, doc)"
                " VALUES (?, ?, ?, ?)"
            )
            params: tuple = (tenant, apikey, resource, doc)
        else:
            sql = (
                "UPDATE service_groups SET doc = ? WHERE tenant = ? AND apikey = ? AND resource = ?"
            )
            params = (doc, tenant, apikey, resource)
        return await self.db.write(lambda c: c.execute(sql, params).rowcount == 1)

    async def service_groups(
        self, tenant: str | None = None, *, apikey: str | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        where, params = [], []
        if tenant is not None:
            where.append("tenant = ?")
            params.append(check_tenant(tenant))
        if apikey is not None:
            where.append("apikey = ?")
            params.append(apikey)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT tenant, doc FROM service_groups{clause} ORDER BY apikey, resource"
        rows = await self.db.read(lambda c: c.execute(sql, params).fetchall())
        return [(r[0], orjson.loads(r[1])) for r in rows]

    async def delete_service_group(self, tenant: str, apikey: str, resource: str) -> bool:
        return await self.db.write(
            lambda c: (
                c.execute(
                    "DELETE FROM service_groups WHERE tenant = ? AND apikey = ? AND resource = ?",
                    (tenant, apikey, resource),
                ).rowcount
                == 1
            )
        )

    # -- devices --------------------------------------------------------------------------------

    async def save_device(self, tenant: str, device: dict[str, Any], *, create: bool) -> bool:
        check_tenant(tenant)
        device_id, doc = device_columns(device)
        if create:
            sql = "INSERT OR IGNORE INTO devices(tenant, device_id, doc) VALUES (?, ?, ?)"
            params: tuple = (tenant, device_id, doc)
        else:
            sql = "UPDATE devices SET doc = ? WHERE tenant = ? AND device_id = ?"
            params = (doc, tenant, device_id)
        return await self.db.write(lambda c: c.execute(sql, params).rowcount == 1)

    async def get_device(self, tenant: str, device_id: str) -> dict[str, Any] | None:
        row = self.db.read_now(
            lambda c: c.execute(
                "SELECT doc FROM devices WHERE tenant = ? AND device_id = ?", (tenant, device_id)
            ).fetchone()
        )
        return orjson.loads(row[0]) if row else None

    async def list_devices(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        limit, offset = check_page(limit, offset)

        def run(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], int]:
            total = conn.execute(
                "SELECT count(*) FROM devices WHERE tenant = ?", (tenant,)
            ).fetchone()[0]
            rows = conn.execute(
                "SELECT doc FROM devices WHERE tenant = ? ORDER BY device_id LIMIT ? OFFSET ?",
                (tenant, limit, offset),
            ).fetchall()
            return [orjson.loads(r[0]) for r in rows], total

        return await self.db.read(run)

    async def device_tenants(self) -> list[str]:
        return await self.db.read(
            lambda c: [
                r[0]
                for r in c.execute(
                    "SELECT tenant FROM devices UNION SELECT tenant FROM service_groups"
                )
            ]
        )

    async def delete_device(self, tenant: str, device_id: str) -> bool:
        return await self.db.write(
            lambda c: (
                c.execute(
                    "DELETE FROM devices WHERE tenant = ? AND device_id = ?", (tenant, device_id)
                ).rowcount
                == 1
            )
        )
