"""Accounts, API keys and sessions: creating them, checking them, revoking them.

Used by the HTTP API (auth/api.py) and the command line (`cidade user ...`) alike; every change
goes to the audit trail. Rules about *who* may change what live here, not in the HTTP layer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from typing import Any

from cidade.auth.audit import Audit
from cidade.auth.credentials import (
    Passwords,
    digest,
    new_api_key,
    new_token,
    parse_api_key,
    same,
)
from cidade.auth.principal import EVERY_TENANT, Principal
from cidade.auth.roles import check_roles, permissions_of
from cidade.ngsild import timefmt
from cidade.store.base import Store

_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}\Z")
_TENANT = re.compile(r"[^\s/\\]{1,256}\Z")


class AccountError(ValueError):
    """A request about accounts or keys that cannot be done (the message says why)."""


class NotFound(LookupError):
    pass


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise AccountError(
            "an account name is 1 to 64 characters: lower-case letters, digits, . _ @ -,"
            " starting with a letter or digit"
        )
    return name


def check_tenants(tenants: object) -> list[str]:
    if isinstance(tenants, tuple):
        tenants = list(tenants)
    if not isinstance(tenants, list) or not all(isinstance(t, str) for t in tenants):
        raise AccountError('tenants must be a list of tenant names ("" is the default tenant)')
    bad = [t for t in tenants if t and t != EVERY_TENANT and not _TENANT.match(t)]
    if bad:
        raise AccountError(f"invalid tenant name(s): {', '.join(map(repr, bad))}")
    return sorted(set(tenants))


def _strings(value: object, what: str) -> list[str]:
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AccountError(f"{what} must be a list of non-empty strings")
    return sorted(set(value))


def _roles(value: object) -> list[str]:
    try:
        return check_roles(_strings(value, "roles"))
    except ValueError as exc:
        raise AccountError(str(exc)) from None


def public_account(account: dict[str, Any]) -> dict[str, Any]:
    """An account as the API shows it: never its password hash."""
    return {k: v for k, v in account.items() if k != "password_hash"}


def public_key(key: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in key.items() if k != "secret_hash"}


def _within(tenants: Iterable[str], of: Principal) -> bool:
    return EVERY_TENANT in of.tenants or set(tenants) <= set(of.tenants)


def _shares(tenants: Iterable[str], of: Principal) -> bool:
    return EVERY_TENANT in of.tenants or bool(set(tenants) & set(of.tenants))


class Accounts:
    def __init__(self, store: Store, audit: Audit, *, session_max_age: float) -> None:
        self.store = store
        self.audit = audit
        self.passwords = Passwords()
        self.session_max_age = session_max_age

    # -- accounts -------------------------------------------------------------------------------

    async def create(
        self,
        by: Principal,
        name: object,
        *,
        password: object = None,
        roles: object = (),
        tenants: object = ("",),
        departments: object = (),
    ) -> dict[str, Any]:
        name = check_name(name)
        role_list = _roles(roles)
        tenant_list = check_tenants(tenants)
        dept_list = _strings(departments, "departments")
        self._may_grant(by, tenant_list)
        now = timefmt.now()
        account: dict[str, Any] = {
            "name": name,
            "roles": role_list,
            "tenants": tenant_list,
            "departments": dept_list,
            "disabled": False,
            "createdAt": now,
            "modifiedAt": now,
        }
        if password is not None:
            try:
                account["password_hash"] = await self.passwords.hash(
                    Passwords.check_strength(password)
                )
            except ValueError as exc:
                raise AccountError(str(exc)) from None
        if not await self.store.save_account(account, create=True):
            raise AccountError(f"an account named {name!r} already exists")
        await self.audit.record(
            "account.created", by, target=f"account:{name}", roles=role_list, tenants=tenant_list
        )
        return public_account(account)

    @staticmethod
    def _may_grant(by: Principal, tenants: list[str]) -> None:
        """An administrator gives only tenants it holds, so only a platform administrator
        (every tenant, "*") makes another one."""
        if not _within(tenants, by):
            raise AccountError("you may only give tenants you belong to")

    async def get(self, by: Principal, name: str) -> dict[str, Any]:
        account = await self.store.get_account(name)
        # Another tenant's account is "not found": its existence is not ours to tell.
        if account is None or not _shares(account["tenants"], by):
            raise NotFound(f"no account named {name!r}")
        return account

    async def list(self, by: Principal) -> list[dict[str, Any]]:
        return [
            public_account(a) for a in await self.store.list_accounts() if _shares(a["tenants"], by)
        ]

    async def change(self, by: Principal, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        account = await self.get(by, name)
        unknown = set(changes) - {"roles", "tenants", "departments", "disabled", "password"}
        if unknown:
            raise AccountError(f"unknown member(s): {', '.join(sorted(unknown))}")
        before = {k: account.get(k) for k in ("roles", "tenants", "departments", "disabled")}
        updated = dict(account)
        if "roles" in changes:
            updated["roles"] = _roles(changes["roles"])
        if "tenants" in changes:
            updated["tenants"] = check_tenants(changes["tenants"])
        if "departments" in changes:
            updated["departments"] = _strings(changes["departments"], "departments")
        if "disabled" in changes:
            if not isinstance(changes["disabled"], bool):
                raise AccountError("disabled must be true or false")
            updated["disabled"] = changes["disabled"]
        # Both the old and the new tenants must be the administrator's own.
        self._may_grant(by, updated["tenants"])
        self._may_grant(by, account["tenants"])
        if "password" in changes:
            try:
                updated["password_hash"] = await self.passwords.hash(
                    Passwords.check_strength(changes["password"])
                )
            except ValueError as exc:
                raise AccountError(str(exc)) from None
        updated["modifiedAt"] = timefmt.now()
        await self.store.save_account(updated, create=False)
        after = {k: updated.get(k) for k in before}
        if after != before:
            await self.audit.record(
                "account.changed", by, target=f"account:{name}", before=before, after=after
            )
        if "password" in changes:
            await self.audit.record("password.changed", by, target=f"account:{name}")
        if updated["disabled"] or "password" in changes:
            await self.store.delete_sessions(account=name)
        return public_account(updated)

    async def delete(self, by: Principal, name: str) -> None:
        account = await self.get(by, name)
        self._may_grant(by, account["tenants"])
        for key in await self.store.list_api_keys(owner=name):
            if not key.get("revoked"):
                await self._revoke(by, key)
        await self.store.delete_account(name)
        await self.audit.record("account.deleted", by, target=f"account:{name}")

    async def change_own_password(self, by: Principal, current: object, new: object) -> None:
        account = await self.store.get_account(by.account) if by.account else None
        if account is None or not isinstance(current, str):
            raise AccountError("the current password is wrong")
        if not await self.passwords.verify(account.get("password_hash"), current):
            await self.audit.record("password.changed", by, outcome="denied", target=by.subject)
            raise AccountError("the current password is wrong")
        try:
            account["password_hash"] = await self.passwords.hash(Passwords.check_strength(new))
        except ValueError as exc:
            raise AccountError(str(exc)) from None
        account["modifiedAt"] = timefmt.now()
        await self.store.save_account(account, create=False)
        await self.store.delete_sessions(account=by.account)
        await self.audit.record("password.changed", by, target=by.subject)

    # -- log-in and sessions --------------------------------------------------------------------

    async def log_in(self, name: object, password: object) -> dict[str, Any] | None:
        """The account when the name and password hold (and it is enabled), else None; the
        caller records the outcome (it knows the tenant and the address)."""
        if not isinstance(name, str) or not isinstance(password, str) or len(password) > 1024:
            return None
        account = await self.store.get_account(name) if _NAME.match(name) else None
        stored = account.get("password_hash") if account else None
        ok = await self.passwords.verify(stored, password)
        if not ok or account is None or account.get("disabled"):
            return None
        return account

    async def open_session(self, account: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(cookie value, session): the cookie is shown once; the store keeps its hash."""
        token = new_token()
        now = time.time()
        # Log-ins are rare next to requests: a good moment to forget sessions long expired.
        await self.store.delete_sessions(expired_before=now)
        session = {
            "id": digest(token),
            "account": account["name"],
            "csrf": new_token(),
            "created": now,
            "expires": now + self.session_max_age,
        }
        await self.store.save_session(session)
        return token, session

    async def session_principal(self, token: str) -> Principal | None:
        session = await self.store.get_session(digest(token))
        if session is None or session["expires"] < time.time():
            return None
        account = await self.store.get_account(session["account"])
        if account is None or account.get("disabled"):
            return None
        return account_principal(account, csrf=session["csrf"])

    async def close_session(self, token: str) -> None:
        await self.store.delete_sessions(session_id=digest(token))

    # -- API keys -------------------------------------------------------------------------------

    async def create_key(self, by: Principal, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """(the key, shown once; its record). A key acts for its owner with at most the owner's
        roles and tenants, narrowed by ``scope``; a device key (role "device") writes only the
        entities it lists, and only those who may write entities create one."""
        unknown = set(spec) - {"label", "roles", "tenants", "scope", "entities", "expires"}
        if unknown:
            raise AccountError(f"unknown member(s): {', '.join(sorted(unknown))}")
        label = spec.get("label", "")
        if not isinstance(label, str) or len(label) > 200:
            raise AccountError("label must be a string of at most 200 characters")
        roles = _roles(spec.get("roles", sorted(by.roles)))
        device = roles == ["device"]
        if device:
            if "entities.write" not in permissions_of(by.roles):
                raise AccountError("only those who may write entities create device keys")
            entities = _strings(spec.get("entities"), "entities") if "entities" in spec else []
            if not entities:
                raise AccountError(
                    "a device key lists the entities it may write (ids, or prefixes ending in *)"
                )
        else:
            if "device" in roles:
                raise AccountError("a device key has the role device and no other")
            if not set(roles) <= set(by.roles):
                raise AccountError("a key cannot have roles its owner does not have")
            if "entities" in spec:
                raise AccountError("only a device key lists entities")
            entities = []
        tenants = check_tenants(spec.get("tenants", sorted(by.tenants)))
        if not _within(tenants, by):
            raise AccountError("a key cannot reach tenants its owner does not belong to")
        scope = spec.get("scope")
        if scope is not None:
            scope = _strings(scope, "scope")
            extra = set(scope) - permissions_of(roles)
            if extra:
                raise AccountError(
                    f"scope names permissions the key's roles do not give: {', '.join(sorted(extra))}"
                )
        expires = spec.get("expires")
        if expires is not None:
            try:
                expires = timefmt.normalize(expires, "expires")
            except Exception:
                raise AccountError("expires must be an ISO 8601 date-time") from None
            if expires <= timefmt.now():
                raise AccountError("expires is in the past")
        new = new_api_key()
        record = {
            "id": new.key_id,
            "secret_hash": new.secret_hash,
            "owner": by.account,
            "createdBy": by.subject,
            "label": label,
            "roles": roles,
            "tenants": tenants,
            "scope": scope,
            "entities": entities,
            "expires": expires,
            "createdAt": timefmt.now(),
            "revoked": None,
        }
        await self.store.save_api_key(record, create=True)
        await self.audit.record(
            "key.created", by, target=f"key:{new.key_id}", roles=roles, tenants=tenants
        )
        return new.token, public_key(record)

    async def keys(self, by: Principal, *, every: bool) -> list[dict[str, Any]]:
        if every:
            found = [k for k in await self.store.list_api_keys() if _shares(k["tenants"], by)]
        else:
            found = await self.store.list_api_keys(owner=by.account) if by.account else []
        return [public_key(k) for k in found]

    async def revoke_key(self, by: Principal, key_id: str, *, any_owner: bool) -> None:
        key = await self.store.get_api_key(key_id)
        mine = key is not None and by.account and key["owner"] == by.account
        theirs = key is not None and any_owner and _shares(key["tenants"], by)
        if key is None or not (mine or theirs):
            raise NotFound(f"no API key {key_id!r}")
        if key.get("revoked"):
            return
        await self._revoke(by, key)

    async def _revoke(self, by: Principal, key: dict[str, Any]) -> None:
        key = {**key, "revoked": timefmt.now()}
        await self.store.save_api_key(key, create=False)
        await self.audit.record("key.revoked", by, target=f"key:{key['id']}")

    async def key_principal(self, token: str) -> Principal | None:
        """The principal of a presented key, or None when it is unknown, wrong, revoked,
        expired, or its owner can no longer act."""
        parsed = parse_api_key(token)
        if parsed is None:
            return None
        key_id, secret_hash = parsed
        key = await self.store.get_api_key(key_id)
        if key is None or not same(key["secret_hash"], secret_hash):
            return None
        if key.get("revoked") or (key.get("expires") and key["expires"] <= timefmt.now()):
            return None
        roles = set(key["roles"])
        tenants = set(key["tenants"])
        departments: list[str] = []
        if key["owner"]:
            owner = await self.store.get_account(key["owner"])
            if owner is None or owner.get("disabled"):
                return None
            if roles != {"device"}:
                # A key never outgrows its owner: roles taken away from the account are taken
                # from its keys at once.
                roles &= set(owner["roles"])
                if EVERY_TENANT not in owner["tenants"]:
                    owned = set(owner["tenants"])
                    tenants = owned if EVERY_TENANT in tenants else tenants & owned
                departments = owner.get("departments", [])
        return Principal(
            subject=f"key:{key_id}",
            kind="api_key",
            roles=frozenset(roles),
            tenants=frozenset(tenants),
            departments=frozenset(departments),
            entities=tuple(key.get("entities") or ()),
            scope=frozenset(key["scope"]) if key.get("scope") is not None else None,
            account=key["owner"],
        )


def account_principal(account: dict[str, Any], *, csrf: str | None = None) -> Principal:
    return Principal(
        subject=f"account:{account['name']}",
        kind="account",
        roles=frozenset(account["roles"]),
        tenants=frozenset(account["tenants"]),
        departments=frozenset(account.get("departments", ())),
        account=account["name"],
        csrf=csrf,
    )
