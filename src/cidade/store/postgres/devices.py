"""Device storage on PostgreSQL (the IoT agent's service groups and devices): a mixin of
PostgresStore. Every change is announced on the store's NOTIFY channel as "devices" in the
transaction that makes it, so every worker's agent drops what it cached."""

from __future__ import annotations

from typing import Any

import asyncpg

from cidade.store.devices import check_page, check_tenant, device_columns, group_columns


def _count(status: str) -> int:
    """The row count of a command status ("INSERT 0 1", "DELETE 3")."""
    return int(status.split()[-1])


class PostgresDevices:
    channel: str  # PostgresStore's NOTIFY channel and its (open) pool
    _pool: asyncpg.Pool

    async def _changed(self, sql: str, *args: Any) -> bool:
        """Run one change; announce it when it touched a row, in the same transaction."""
        async with self._pool.acquire() as conn, conn.transaction():
            if _count(await conn.execute(sql, *args)) != 1:
                return False
            await conn.execute("SELECT pg_notify($1, 'devices')", self.channel)
        return True

    # -- service groups -------------------------------------------------------------------------

    async def save_service_group(self, tenant: str, group: dict[str, Any], *, create: bool) -> bool:
        check_tenant(tenant)
        apikey, resource, doc = group_columns(group)
        if create:  # the unique (apikey, resource) index refuses a pair of any tenant
            sql = (
                "INSERT INTO service_groups(tenant, apikey, resource, doc)"
                " VALUES ($1, $2, $3, $4::text::jsonb) ON CONFLICT DO NOTHING"
            )
        else:
            sql = (
                "UPDATE service_groups SET doc = $4::text::jsonb"
                " WHERE tenant = $1 AND apikey = $2 AND resource = $3"
            )
        return await self._changed(sql, tenant, apikey, resource, doc)

    async def service_groups(
        self, tenant: str | None = None, *, apikey: str | None = None
    ) -> list[tuple[str, dict[str, Any]]]:
        where: list[str] = []
        params: list[Any] = []
        if tenant is not None:
            params.append(check_tenant(tenant))
            where.append(f"tenant = ${len(params)}")
        if apikey is not None:
            params.append(apikey)
            where.append(f"apikey = ${len(params)}")
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        rows = await self._pool.fetch(
            f"SELECT tenant, doc FROM service_groups{clause} ORDER BY apikey, resource", *params
        )
        return [(r["tenant"], r["doc"]) for r in rows]

    async def delete_service_group(self, tenant: str, apikey: str, resource: str) -> bool:
        return await self._changed(
            "DELETE FROM service_groups WHERE tenant = $1 AND apikey = $2 AND resource = $3",
            tenant,
            apikey,
            resource,
        )

    # -- devices --------------------------------------------------------------------------------

    async def save_device(self, tenant: str, device: dict[str, Any], *, create: bool) -> bool:
        check_tenant(tenant)
        device_id, doc = device_columns(device)
        if create:
            sql = (
                "INSERT INTO devices(tenant, device_id, doc) VALUES ($1, $2, $3::text::jsonb)"
                " ON CONFLICT DO NOTHING"
            )
        else:
            sql = "UPDATE devices SET doc = $3::text::jsonb WHERE tenant = $1 AND device_id = $2"
        return await self._changed(sql, tenant, device_id, doc)

    async def get_device(self, tenant: str, device_id: str) -> dict[str, Any] | None:
        return await self._pool.fetchval(
            "SELECT doc FROM devices WHERE tenant = $1 AND device_id = $2", tenant, device_id
        )

    async def list_devices(
        self, tenant: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        limit, offset = check_page(limit, offset)
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
            total = await conn.fetchval("SELECT count(*) FROM devices WHERE tenant = $1", tenant)
            rows = await conn.fetch(
                "SELECT doc FROM devices WHERE tenant = $1 ORDER BY device_id LIMIT $2 OFFSET $3",
                tenant,
                limit,
                offset,
            )
        return [r["doc"] for r in rows], total

    async def device_tenants(self) -> list[str]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT tenant FROM devices UNION SELECT tenant FROM service_groups"
            )
        return [r["tenant"] for r in rows]

    async def delete_device(self, tenant: str, device_id: str) -> bool:
        return await self._changed(
            "DELETE FROM devices WHERE tenant = $1 AND device_id = $2", tenant, device_id
        )
