"""/auth: log-in and log-out, who am I, API keys, accounts, the audit log (docs/api/auth.md).

Every route declares its permission like any other; errors are ProblemDetails like the hub's.
"""

from __future__ import annotations

import html
import urllib.parse
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cidade.auth.accounts import (
    AccountError,
    Accounts,
    NotFound,
    account_principal,
    public_account,
)
from cidade.auth.audit import EVENTS, Audit
from cidade.auth.credentials import new_token, same
from cidade.auth.errors import TooManyRequests, Unauthenticated
from cidade.auth.gate import FORM, SESSION_COOKIE, Gate, grant_of, read_form
from cidade.auth.limits import LoginLockout
from cidade.auth.principal import EVERY_TENANT
from cidade.auth.roles import PUBLIC, permissions_of
from cidade.auth.routes import GuardedRoute, guarded
from cidade.config import Settings
from cidade.http.bodies import JSON, read_json
from cidade.ngsild import timefmt
from cidade.ngsild.errors import BadRequestData, InvalidRequest, ResourceNotFound
from cidade.store.base import AuditQuery

PREFIX = "/auth"
LOGIN_CSRF_COOKIE = "cidade_login_csrf"


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


class AuthApi:
    def __init__(self, settings: Settings, accounts: Accounts, audit: Audit, gate: Gate) -> None:
        self.settings = settings
        self.accounts = accounts
        self.audit = audit
        self.gate = gate
        self.lockout = LoginLockout(accounts.store)

    async def _body(self, request: Request) -> dict[str, Any]:
        body, _ = await read_json(request, self.settings.max_body_bytes)
        if not isinstance(body, dict):
            raise BadRequestData("the body must be a JSON object")
        return body

    def _secure(self, request: Request) -> bool:
        return request.url.scheme == "https" or self.settings.base_url.startswith("https://")

    # -- log-in, log-out, me --------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        """A minimal log-in form (the web faces bring their own); its CSRF token is a cookie
        that the form must repeat (double submit), so another site cannot log a victim in."""
        token = new_token()
        nxt = html.escape(_safe_next(request.query_params.get("next")), quote=True)
        page = (
            "<!doctype html><html lang=en><meta charset=utf-8><title>Cidade: log in</title>"
            f'<form method=post action="{PREFIX}/login">'
            f'<input type=hidden name=csrf_token value="{token}">'
            f'<input type=hidden name=next value="{nxt}">'
            "<label>Name <input name=name autocomplete=username required></label>"
            "<label>Password <input name=password type=password"
            " autocomplete=current-password required></label>"
            "<button>Log in</button></form></html>"
        )
        response = HTMLResponse(page, headers={"Cache-Control": "no-store"})
        response.set_cookie(
            LOGIN_CSRF_COOKIE,
            token,
            max_age=3600,
            httponly=True,
            samesite="strict",
            secure=self._secure(request),
            path=PREFIX,
        )
        return response

    async def login(self, request: Request) -> Response:
        """POST /auth/login: JSON {name, password} or the form; sets the session cookie."""
        form = request.headers.get("content-type", "").startswith(FORM)
        if form:
            fields = await read_form(request, self.settings.max_body_bytes)
            cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
            if not cookie or not same(fields.get("csrf_token", ""), cookie):
                raise BadRequestData("the log-in form's CSRF token is missing or wrong")
        else:
            fields = await self._body(request)
        name, password = fields.get("name"), fields.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise BadRequestData("name and password are required strings")
        tenant = grant_of(request).tenant
        address = self.gate.client_address(request)
        wait = await self.lockout.locked_for(name, address)
        if wait:
            await self.audit.record(
                "login.failed", "unknown", tenant=tenant, outcome="locked", target=_who(name)
            )
            raise TooManyRequests(f"too many failed log-ins; try again in {wait} s", wait)
        account = await self.accounts.log_in(name, password)
        if account is None:
            await self.lockout.failed(name, address)
            # The name is recorded only when it is an account's: a failed log-in may carry a
            # password typed into the name field.
            known = await self.accounts.store.get_account(name) is not None
            await self.audit.record(
                "login.failed",
                "unknown",
                tenant=tenant,
                outcome="denied",
                target=_who(name) if known else "",
            )
            raise Unauthenticated("wrong name or password")
        await self.lockout.succeeded(name, address)
        token, session = await self.accounts.open_session(account)
        principal = account_principal(account)
        await self.audit.record("login", principal, tenant=tenant, target=principal.subject)
        if form:
            response: Response = RedirectResponse(_safe_next(fields.get("next")), status_code=303)
            response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
        else:
            response = _json(
                {
                    "account": account["name"],
                    "roles": account["roles"],
                    "tenants": account["tenants"],
                    "csrfToken": session["csrf"],
                    "expires": timefmt.from_epoch(session["expires"]),
                }
            )
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=int(self.settings.session_max_age),
            httponly=True,
            samesite="lax",
            secure=self._secure(request),
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        principal = grant_of(request).principal
        token = request.cookies.get(SESSION_COOKIE)
        if token:
            await self.accounts.close_session(token)
            await self.audit.record("logout", principal, target=principal.subject)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    async def me(self, request: Request) -> Response:
        grant = grant_of(request)
        p = grant.principal
        granted = permissions_of(p.roles)
        if p.scope is not None:
            granted &= p.scope | {PUBLIC}
        body: dict[str, Any] = {
            "subject": p.subject,
            "kind": p.kind,
            "roles": sorted(p.roles),
            "tenants": sorted(p.tenants),
            "departments": sorted(p.departments),
            "permissions": sorted(granted),
        }
        if p.entities:
            body["entities"] = list(p.entities)
        if p.csrf:
            body["csrfToken"] = p.csrf
        return _json(body)

    async def change_password(self, request: Request) -> Response:
        body = await self._body(request)
        principal = grant_of(request).principal
        try:
            await self.accounts.change_own_password(
                principal, body.get("currentPassword"), body.get("newPassword")
            )
        except AccountError as exc:
            raise BadRequestData(str(exc)) from None
        self.gate.forget()
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # -- API keys -------------------------------------------------------------------------------

    def _manages(self, request: Request) -> bool:
        return "accounts.manage" in permissions_of(grant_of(request).principal.roles)

    async def list_keys(self, request: Request) -> Response:
        every = request.query_params.get("all", "false")
        if every not in ("true", "false"):
            raise BadRequestData("all must be true or false")
        if every == "true" and not self._manages(request):
            every = "false"
        keys = await self.accounts.keys(grant_of(request).principal, every=every == "true")
        return _json(keys)

    async def create_key(self, request: Request) -> Response:
        body = await self._body(request)
        principal = grant_of(request).principal
        if not principal.account:
            raise BadRequestData("keys belong to accounts: log in with one to create a key")
        try:
            token, record = await self.accounts.create_key(principal, body)
        except AccountError as exc:
            raise BadRequestData(str(exc)) from None
        self.gate.forget()
        return _json(
            {**record, "key": token},
            status=201,
            headers={"Location": f"{PREFIX}/keys/{record['id']}", "Cache-Control": "no-store"},
        )

    async def revoke_key(self, request: Request) -> Response:
        try:
            await self.accounts.revoke_key(
                grant_of(request).principal,
                request.path_params["key_id"],
                any_owner=self._manages(request),
            )
        except NotFound as exc:
            raise ResourceNotFound(str(exc)) from None
        self.gate.forget()
        return Response(status_code=204)

    # -- accounts -------------------------------------------------------------------------------

    async def list_accounts(self, request: Request) -> Response:
        return _json(await self.accounts.list(grant_of(request).principal))

    async def create_account(self, request: Request) -> Response:
        body = await self._body(request)
        unknown = set(body) - {"name", "password", "roles", "tenants", "departments"}
        if unknown:
            raise BadRequestData(f"unknown member(s): {', '.join(sorted(unknown))}")
        try:
            account = await self.accounts.create(
                grant_of(request).principal,
                body.get("name"),
                password=body.get("password"),
                roles=body.get("roles", []),
                tenants=body.get("tenants", [""]),
                departments=body.get("departments", []),
            )
        except AccountError as exc:
            raise BadRequestData(str(exc)) from None
        location = f"{PREFIX}/accounts/{urllib.parse.quote(account['name'])}"
        return _json(account, status=201, headers={"Location": location})

    async def get_account(self, request: Request) -> Response:
        try:
            account = await self.accounts.get(
                grant_of(request).principal, request.path_params["name"]
            )
        except NotFound as exc:
            raise ResourceNotFound(str(exc)) from None
        return _json(public_account(account))

    async def change_account(self, request: Request) -> Response:
        body = await self._body(request)
        try:
            account = await self.accounts.change(
                grant_of(request).principal, request.path_params["name"], body
            )
        except NotFound as exc:
            raise ResourceNotFound(str(exc)) from None
        except AccountError as exc:
            raise BadRequestData(str(exc)) from None
        self.gate.forget()
        return _json(account)

    async def delete_account(self, request: Request) -> Response:
        try:
            await self.accounts.delete(grant_of(request).principal, request.path_params["name"])
        except NotFound as exc:
            raise ResourceNotFound(str(exc)) from None
        except AccountError as exc:
            raise BadRequestData(str(exc)) from None
        self.gate.forget()
        return Response(status_code=204)

    # -- the audit log --------------------------------------------------------------------------

    async def audit_log(self, request: Request) -> Response:
        params = request.query_params
        unknown = set(params) - {"event", "actor", "since", "until", "before", "limit", "tenant"}
        if unknown:
            raise BadRequestData(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        principal = grant_of(request).principal
        event = params.get("event")
        if event is not None and event not in EVENTS:
            raise BadRequestData(f"unknown event {event!r}; events are {', '.join(EVENTS)}")
        try:
            limit = int(params.get("limit", "100"))
            before = int(params["before"]) if "before" in params else None
        except ValueError:
            raise InvalidRequest("limit and before must be integers") from None
        if not 1 <= limit <= 1000:
            raise BadRequestData("limit must be between 1 and 1000")
        if before is not None and not 0 <= before < 2**62:
            raise BadRequestData("before must be a sequence number of the log")
        tenants: list[str] | None = None
        if "tenant" in params:
            tenants = [params["tenant"]]
            if not principal.member_of(params["tenant"]):
                return _json([])
        elif EVERY_TENANT not in principal.tenants:
            tenants = sorted(principal.tenants)
        query = AuditQuery(
            tenants=tenants,
            event=event,
            actor=params.get("actor"),
            since=timefmt.normalize(params["since"], "since") if "since" in params else None,
            until=timefmt.normalize(params["until"], "until") if "until" in params else None,
            before_seq=before,
            limit=limit + 1,
        )
        events = await self.audit.events(query)
        headers = {}
        if len(events) > limit:
            events = events[:limit]
            nxt = dict(params)
            nxt["before"] = str(events[-1]["seq"])
            headers["Link"] = f'<{PREFIX}/audit?{urllib.parse.urlencode(nxt)}>; rel="next"'
        return _json(events, headers=headers)

    def routes(self) -> list[GuardedRoute]:
        return [
            guarded(
                f"{PREFIX}/login",
                {"GET": (self.login_form, PUBLIC), "POST": (self.login, PUBLIC)},
            ),
            guarded(f"{PREFIX}/logout", {"POST": (self.logout, PUBLIC)}),
            guarded(f"{PREFIX}/me", {"GET": (self.me, PUBLIC)}),
            guarded(f"{PREFIX}/me/password", {"POST": (self.change_password, "credentials.own")}),
            guarded(
                f"{PREFIX}/keys",
                {
                    "GET": (self.list_keys, "credentials.own"),
                    "POST": (self.create_key, "credentials.own"),
                },
            ),
            guarded(f"{PREFIX}/keys/{{key_id}}", {"DELETE": (self.revoke_key, "credentials.own")}),
            guarded(
                f"{PREFIX}/accounts",
                {
                    "GET": (self.list_accounts, "accounts.manage"),
                    "POST": (self.create_account, "accounts.manage"),
                },
            ),
            guarded(
                f"{PREFIX}/accounts/{{name}}",
                {
                    "GET": (self.get_account, "accounts.manage"),
                    "PATCH": (self.change_account, "accounts.manage"),
                    "DELETE": (self.delete_account, "accounts.manage"),
                },
            ),
            guarded(f"{PREFIX}/audit", {"GET": (self.audit_log, "audit.read")}),
        ]


def _who(name: str) -> str:
    return f"account:{name}"


def _safe_next(value: object) -> str:
    """Where to go after logging in: a path of this site only (no open redirect)."""
    if isinstance(value, str) and value.startswith("/") and not value.startswith(("//", "/\\")):
        return value
    return "/"
