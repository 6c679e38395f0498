"""The gate every request passes: who is calling, in which tenant, may they, how often.

Routes declare one permission per method (``auth.routes.guarded``); before the handler runs,
the gate authenticates the caller (API key, OIDC bearer token, session cookie, or nobody),
takes a token from its rate bucket, checks the tenant and the permission, and leaves a
``Grant`` in the request scope: what the handler may touch (public types only, or a device's
own entities). Refusals are audited.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from cidade.auth.accounts import Accounts
from cidade.auth.audit import Audit
from cidade.auth.credentials import KEY_PREFIX, digest, same
from cidade.auth.errors import AccessDenied, TooManyRequests, Unauthenticated
from cidade.auth.limits import RateLimiter
from cidade.auth.oidc import OidcVerifier, TokenRejected, looks_like_jwt
from cidade.auth.principal import ANONYMOUS, EVERY_TENANT, Principal
from cidade.auth.roles import (
    EVERY_SUBSCRIPTION,
    PERMISSIONS,
    PUBLIC,
    PUBLIC_READERS,
    ROLES,
    permissions_of,
)
from cidade.config import Settings
from cidade.http.clients import ClientAddresses
from cidade.http.egress import parse_networks
from cidade.ngsild.errors import BadRequestData

log = logging.getLogger("cidade.auth")

SESSION_COOKIE = "cidade_session"
CSRF_HEADER = "x-csrf-token"
FORM = "application/x-www-form-urlencoded"
GRANT = "cidade.grant"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
# Roles whose reads of entities are not narrowed (to public types, or to own entities).
_READ_ALL = frozenset(r for r in ROLES if r not in PUBLIC_READERS and r != "device")

_EVERY_PERMISSION = frozenset(PERMISSIONS)
# Reads that the public and citizens make of the public entity types only.
_NARROWED_READS = frozenset({"entities.read", "types.read"})

# The principal every request has when access control is off (local development only).
DEVELOPER = Principal(
    subject="developer",
    kind="account",
    roles=frozenset({"admin"}),
    tenants=frozenset({EVERY_TENANT}),
)


@dataclass(frozen=True, slots=True)
class Grant:
    """What one request may touch, once the gate has let it in."""

    principal: Principal
    tenant: str
    permission: str
    # Entity types (expanded IRIs) it may read; None: every type.
    read_types: frozenset[str] | None = None
    # Entity ids (or prefixes ending in "*") it may read and write; None: every entity.
    own_entities: tuple[str, ...] | None = None
    # The owner whose subscriptions alone it sees and changes; None: every subscription.
    subscriber: str | None = None
    # Every permission the caller holds here (its roles in this tenant, narrowed by a key's
    # scope): what a handler checks beyond the route's own permission (commands.send).
    permissions: frozenset[str] = frozenset()

    def may(self, permission: str) -> bool:
        return permission in self.permissions

    def owns(self, entity_id: str) -> bool:
        if self.own_entities is None:
            return True
        return any(
            entity_id.startswith(p[:-1]) if p.endswith("*") else entity_id == p
            for p in self.own_entities
        )

    def may_read(self, entity: dict[str, Any]) -> bool:
        if not self.owns(entity["id"]):
            return False
        if self.read_types is None:
            return True
        return any(t in self.read_types for t in entity.get("type", ()))

    def check_writes(self, entity_ids: Iterable[object]) -> None:
        if self.own_entities is None:
            return
        foreign = [i for i in entity_ids if not isinstance(i, str) or not self.owns(i)]
        if foreign:
            raise AccessDenied("a device writes only its own entities")


@dataclass(frozen=True, slots=True)
class Presented:
    """What a request presents at the gate besides its headers, for routes whose protocol
    carries them elsewhere (Open311: the API key in the form, the tenant by jurisdiction).
    ``tenant``: the tenant the route itself names (the tenant headers are then not read);
    ``api_key``: a credential from the body, used instead of the headers' credentials;
    ``members_only``: outside its tenants a principal may not act at all (never as the
    public there), on a route whose permission is not PUBLIC."""

    tenant: str | None = None
    api_key: str | None = None
    members_only: bool = False


def owner_of(principal: Principal) -> str:
    """Who owns what a principal creates: its account, else itself (a token's subject)."""
    return f"account:{principal.account}" if principal.account else principal.subject


def grant_of(request: Request) -> Grant:
    return request.scope[GRANT]


class _Cache:
    """Principals of recently seen keys and tokens, for a few seconds, so that a busy device
    costs one lookup per ten seconds instead of one per request. Any change of an account or a
    key made through the API empties it at once (in this worker, and in the others through the
    store's "auth" topic); one made by the command line on the embedded store, which has no
    such topic, shows within the time to live."""

    def __init__(self, ttl: float = 10.0, size: int = 10_000) -> None:
        self.ttl = ttl
        self.size = size
        self._items: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, key: str) -> Principal | None:
        hit = self._items.get(key)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def put(self, key: str, principal: Principal) -> None:
        self._items[key] = (time.monotonic() + self.ttl, principal)
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()


class Gate:
    def __init__(
        self,
        settings: Settings,
        accounts: Accounts,
        audit: Audit,
        *,
        public_types: frozenset[str],
        oidc: OidcVerifier | None = None,
    ) -> None:
        self.enabled = settings.auth
        self.max_body_bytes = settings.max_body_bytes
        self.accounts = accounts
        self.audit = audit
        self.public_types = public_types
        self.oidc = oidc
        self.limiter = RateLimiter(settings.rate_limit)
        self.public_limiter = RateLimiter(settings.rate_limit_anonymous)
        self.clients = ClientAddresses(parse_networks(settings.trusted_proxies))
        self.cache = _Cache()

    def forget(self) -> None:
        """Drop every cached principal (an account or a key changed)."""
        self.cache.clear()

    async def enter(
        self, request: Request, permission: str, presented: Presented | None = None
    ) -> Grant:
        # One pass over the raw headers: this runs before every request, and Starlette's
        # header lookups scan the list once per name.
        tenant = service = None
        authorization = api_key = None
        cookies = False
        for name, value in request.scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"ngsild-tenant":
                tenant = _check_tenant(value.decode("latin-1"))
            elif name == b"x-api-key":
                api_key = value.decode("latin-1")
            elif name == b"cookie":
                cookies = True
            elif name == b"fiware-service":
                service = _check_tenant(value.decode("latin-1"))
        # FIWARE tools (IoT agents and their provisioning scripts) name the tenant
        # Fiware-Service; it is the same tenant, checked the same way.
        if service is not None and tenant is not None and service != tenant:
            raise BadRequestData("NGSILD-Tenant and Fiware-Service name different tenants")
        tenant = tenant if tenant is not None else service or ""
        if presented is not None:
            if presented.tenant is not None:
                tenant = presented.tenant
            if presented.api_key is not None:
                authorization, api_key, cookies = None, presented.api_key, False
        if not self.enabled:
            grant = Grant(DEVELOPER, tenant, permission, permissions=_EVERY_PERMISSION)
            request.scope[GRANT] = grant
            return grant
        principal = await self.authenticate(request, authorization, api_key, cookies)
        self._throttle(request, principal)
        # Outside its tenants a principal is the public there: public reads at most.
        member = principal.member_of(tenant)
        if not member and presented is not None and presented.members_only:
            if permission != PUBLIC:
                await self._deny(request, principal, tenant, permission)
        roles = principal.roles if member else ANONYMOUS.roles
        granted = permissions_of(roles)
        if principal.scope is not None:
            granted = (granted & principal.scope) | {PUBLIC}
        if permission not in granted:
            await self._deny(request, principal, tenant, permission)
        if (
            principal.csrf is not None
            and request.method not in _SAFE
            and permission != PUBLIC
            and not await _csrf_ok(request, principal.csrf, self.max_body_bytes)
        ):
            await self._deny(request, principal, tenant, permission, reason="csrf")
        narrowed = not roles & _READ_ALL
        if narrowed and "device" not in roles and permission in _NARROWED_READS:
            if not self.public_types:
                # Nothing is public here: say "log in" rather than answer with empty lists.
                await self._deny(request, principal, tenant, permission)
        grant = Grant(
            principal,
            tenant,
            permission,
            read_types=self.public_types if narrowed and "device" not in roles else None,
            own_entities=principal.entities if narrowed and "device" in roles else None,
            subscriber=None if roles & EVERY_SUBSCRIPTION else owner_of(principal),
            permissions=granted,
        )
        request.scope[GRANT] = grant
        return grant

    async def authenticate(
        self,
        request: Request,
        authorization: str | None,
        api_key: str | None,
        cookies: bool,
    ) -> Principal:
        """The caller, or ANONYMOUS when it presents nothing; 401 when what it presents does
        not hold (never a silent fall-back to the public)."""
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() == "bearer" and token:
                return await self._token(request, token.strip())
            if authorization.startswith(KEY_PREFIX):
                # CKAN clients send their API token as the bare Authorization header.
                return await self._token(request, authorization.strip())
            await self._fail(request, "unsupported authorization scheme")
        if api_key is not None:
            return await self._token(request, api_key.strip())
        cookie = request.cookies.get(SESSION_COOKIE) if cookies else None
        if cookie:
            principal = await self.accounts.session_principal(cookie)
            if principal is None:
                await self._fail(request, "session expired or unknown")
            assert principal is not None
            return principal
        return ANONYMOUS

    async def _token(self, request: Request, token: str) -> Principal:
        key = digest(token)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        principal = None
        reason = "unknown or revoked API key"
        if token.startswith(KEY_PREFIX):
            principal = await self.accounts.key_principal(token)
        elif self.oidc is not None and looks_like_jwt(token):
            try:
                principal = await self.oidc.verify(token)
            except TokenRejected as exc:
                reason = f"token rejected: {exc.reason}"
        else:
            reason = "unrecognised credentials"
        if principal is None:
            await self._fail(request, reason)
        assert principal is not None
        self.cache.put(key, principal)
        return principal

    def client_address(self, request: Request) -> str:
        """The caller's address, through the trusted proxies (http/clients.py)."""
        return self.clients.of(request.scope)

    def _throttle(self, request: Request, principal: Principal) -> None:
        if principal.anonymous:
            wait = self.public_limiter.take(f"ip:{self.client_address(request)}")
        else:
            wait = self.limiter.take(principal.subject)
        if wait:
            raise TooManyRequests(f"too many requests; try again in {wait} s", wait)

    async def _fail(self, request: Request, reason: str) -> None:
        await self.audit.record(
            "auth.failed",
            "unknown",
            tenant=request.headers.get("ngsild-tenant", ""),
            outcome="denied",
            target=_where(request),
            reason=reason,
        )
        raise Unauthenticated(reason)

    async def _deny(
        self,
        request: Request,
        principal: Principal,
        tenant: str,
        permission: str,
        *,
        reason: str = "permission",
    ) -> None:
        await self.audit.record(
            "access.denied",
            principal,
            tenant=tenant,
            outcome="denied",
            target=_where(request),
            permission=permission,
            reason=reason,
        )
        if reason == "csrf":
            raise AccessDenied(f"a cookie-authenticated {request.method} needs the CSRF token")
        if principal.anonymous:
            raise Unauthenticated("log in, or present an API key or a bearer token")
        raise AccessDenied("you may not do this here")


def _where(request: Request) -> str:
    # The method and path, never the query string (it may carry personal data).
    return f"{request.method} {request.url.path}"


def _check_tenant(tenant: str) -> str:
    if tenant and (len(tenant) > 256 or any(c.isspace() or c in "/\\" for c in tenant)):
        raise BadRequestData(f"invalid NGSILD-Tenant header {tenant!r}")
    return tenant


async def read_form(request: Request, max_bytes: int) -> dict[str, str]:
    """An HTML form's fields (application/x-www-form-urlencoded, the only kind our forms post),
    read within the body size cap; 415 for other media types, 413 when too large."""
    from urllib.parse import parse_qsl

    from cidade.ngsild.errors import PayloadTooLarge, UnsupportedMediaType

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM:
        raise UnsupportedMediaType(f"Content-Type must be {FORM}, got {kind or 'none'}")
    declared = request.headers.get("content-length", "")
    if not declared.isdigit() or int(declared) > max_bytes:
        raise PayloadTooLarge(f"a form is at most {max_bytes} bytes, with its Content-Length")
    raw = await request.body()
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"a form is at most {max_bytes} bytes")
    try:
        return dict(parse_qsl(raw.decode(), max_num_fields=100))
    except (UnicodeDecodeError, ValueError):
        raise BadRequestData("the form is not valid") from None


async def _csrf_ok(request: Request, expected: str, max_bytes: int) -> bool:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.headers.get("content-type", "").startswith(FORM):
        given = (await read_form(request, max_bytes)).get("csrf_token")
    return given is not None and same(given, expected)


def parse_public_types(text: str, expand: Any) -> frozenset[str]:
    """CIDADE_PUBLIC_TYPES -> expanded type IRIs (short names through the core @context)."""
    names: Sequence[str] = [t.strip() for t in text.split(",") if t.strip()]
    return frozenset(expand(n) for n in names)
