"""Principals for access tests, made through the same services the API and the CLI use."""

from __future__ import annotations

from typing import Any

from cidade.auth.accounts import account_principal
from cidade.auth.principal import EVERY_TENANT, Principal

ROOT = Principal(
    subject="test", kind="account", roles=frozenset({"admin"}), tenants=frozenset({EVERY_TENANT})
)
PASSWORD = "correct horse battery"


async def account_with_key(
    app: Any, name: str, roles: list[str], tenants: list[str], **key: Any
) -> str:
    """Create an account (password PASSWORD) and an API key of its own; the key."""
    accounts = app.state.accounts
    await accounts.create(ROOT, name, password=PASSWORD, roles=roles, tenants=tenants)
    owner = account_principal(await accounts.store.get_account(name))
    token, _ = await accounts.create_key(owner, key)
    return token


async def key_of(app: Any, owner_name: str, **key: Any) -> str:
    accounts = app.state.accounts
    owner = account_principal(await accounts.store.get_account(owner_name))
    token, _ = await accounts.create_key(owner, key)
    return token


def bearer(token: str, tenant: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if tenant is not None:
        headers["NGSILD-Tenant"] = tenant
    return headers


def provision_admin(store_url: str, name: str = "platform-admin") -> str:
    """A platform administrator and a key of theirs, made on the store before any app runs on
    it (as `cidade user add` and `cidade key add` do); the key."""
    import asyncio

    from cidade.auth.accounts import Accounts
    from cidade.auth.audit import Audit
    from cidade.store import open_store

    async def make() -> str:
        store = open_store(store_url)
        await store.open()
        try:
            accounts = Accounts(store, Audit(store), session_max_age=3600)
            await accounts.create(ROOT, name, roles=["admin"], tenants=[EVERY_TENANT])
            owner = account_principal(await store.get_account(name))
            token, _ = await accounts.create_key(owner, {"label": "tests"})
            return token
        finally:
            await store.close()

    return asyncio.run(make())
