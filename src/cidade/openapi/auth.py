"""The /auth API (auth/api.py, docs/api/auth.md): log-in, sessions, keys, accounts, audit."""

from __future__ import annotations

from typing import Any

from cidade.openapi.build import (
    LOCATION,
    TENANT,
    ApiPart,
    json_body,
    json_ok,
    merge,
    no_content,
    operation,
    path_param,
    problems,
    query,
)
from cidade.openapi.schemas import STRING, STRINGS, Schema, ref

TAG = "Access"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"

NAME: Schema = {"type": "string", "pattern": "^[a-z0-9][a-z0-9._@-]{0,63}$"}
ROLES: Schema = {
    "type": "array",
    "items": {"enum": ["admin", "operator", "staff", "publisher", "device", "citizen"]},
}

LOGIN: Schema = {
    "type": "object",
    "required": ["name", "password"],
    "properties": {"name": STRING, "password": STRING},
}
LOGIN_FORM: Schema = {
    "type": "object",
    "required": ["name", "password", "csrf_token"],
    "properties": {"name": STRING, "password": STRING, "csrf_token": STRING, "next": STRING},
}
SESSION: Schema = {
    "type": "object",
    "required": ["account", "roles", "tenants", "csrfToken", "expires"],
    "properties": {
        "account": STRING,
        "roles": STRINGS,
        "tenants": STRINGS,
        "csrfToken": STRING,
        "expires": STRING,
    },
}
ME: Schema = {
    "type": "object",
    "required": ["subject", "kind", "roles", "tenants", "departments", "permissions"],
    "properties": {
        "subject": STRING,
        "kind": {"enum": ["account", "api_key", "token", "anonymous"]},
        "roles": STRINGS,
        "tenants": STRINGS,
        "departments": STRINGS,
        "permissions": STRINGS,
        "entities": STRINGS,
        "csrfToken": STRING,
    },
}
PASSWORD_CHANGE: Schema = {
    "type": "object",
    "required": ["currentPassword", "newPassword"],
    "properties": {"currentPassword": STRING, "newPassword": {"type": "string", "minLength": 10}},
}
KEY_SPEC: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "label": {"type": "string", "maxLength": 200},
        "roles": ROLES,
        "tenants": STRINGS,
        "scope": {"anyOf": [STRINGS, {"type": "null"}], "description": "null: not narrowed"},
        "entities": STRINGS,
        "expires": {
            "anyOf": [STRING, {"type": "null"}],
            "description": "ISO 8601 date-time in the future; null: never",
        },
    },
}
API_KEY: Schema = {
    "type": "object",
    "required": ["id", "owner", "label", "roles", "tenants", "entities", "createdAt"],
    "properties": {
        "id": STRING,
        "owner": STRING,
        "createdBy": STRING,
        "label": STRING,
        "roles": STRINGS,
        "tenants": STRINGS,
        "scope": {"anyOf": [STRINGS, {"type": "null"}]},
        "entities": STRINGS,
        "expires": {"anyOf": [STRING, {"type": "null"}]},
        "createdAt": STRING,
        "revoked": {"anyOf": [STRING, {"type": "null"}]},
    },
    "not": {"anyOf": [{"required": ["secret_hash"]}, {"required": ["key"]}]},
}
NEW_API_KEY: Schema = {
    "allOf": [
        {k: v for k, v in API_KEY.items() if k != "not"},
        {
            "type": "object",
            "required": ["key"],
            "properties": {"key": {"type": "string", "pattern": "^cdk_"}},
        },
    ]
}
ACCOUNT: Schema = {
    "type": "object",
    "required": ["name", "roles", "tenants", "departments", "disabled"],
    "properties": {
        "name": STRING,
        "roles": STRINGS,
        "tenants": STRINGS,
        "departments": STRINGS,
        "disabled": {"type": "boolean"},
        "createdAt": STRING,
        "modifiedAt": STRING,
    },
    "not": {"required": ["password_hash"]},
}
ACCOUNT_INPUT: Schema = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": NAME,
        "password": {
            "anyOf": [{"type": "string", "minLength": 10}, {"type": "null"}],
            "description": "absent or null: no password (logs in through the identity provider)",
        },
        "roles": ROLES,
        "tenants": STRINGS,
        "departments": STRINGS,
    },
}
ACCOUNT_CHANGE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "roles": ROLES,
        "tenants": STRINGS,
        "departments": STRINGS,
        "disabled": {"type": "boolean"},
        "password": {"type": "string", "minLength": 10},
    },
}
AUDIT_EVENT: Schema = {
    "type": "object",
    "required": ["seq", "at", "tenant", "actor", "event", "outcome", "target", "detail"],
    "properties": {
        "seq": {"type": "integer"},
        "at": STRING,
        "tenant": {"anyOf": [STRING, {"type": "null"}]},
        "actor": {"anyOf": [STRING, {"type": "null"}]},
        "event": STRING,
        "outcome": {"anyOf": [STRING, {"type": "null"}]},
        "target": {"anyOf": [STRING, {"type": "null"}]},
        "detail": {"type": "object"},
    },
}


def auth_paths() -> dict[str, Any]:
    write = (400, 413, 415)
    return {
        "/auth/login": {
            "get": operation(
                "loginForm",
                "A minimal log-in form",
                {"200": {"description": "The form.", "content": {"text/html": {"schema": STRING}}}},
                tag=TAG,
            ),
            "post": operation(
                "logIn",
                "Log in: a session cookie",
                merge(
                    json_ok(ref("Session"), "Logged in (JSON); the cookie cidade_session is set."),
                    {
                        "303": {
                            "description": "Logged in (form): off to `next`.",
                            "headers": {"Location": LOCATION["Location"]},
                        }
                    },
                    problems(*write),
                ),
                tag=TAG,
                request_body={
                    "required": True,
                    "description": "The name and password, as JSON or from the log-in form.",
                    "content": {JSON: {"schema": LOGIN}, FORM: {"schema": LOGIN_FORM}},
                },
            ),
        },
        "/auth/logout": {
            "post": operation("logOut", "Log out: the session ends", no_content(), tag=TAG)
        },
        "/auth/me": {
            "get": operation("me", "Who the caller is", json_ok(ref("Me"), "The caller."), tag=TAG)
        },
        "/auth/me/password": {
            "post": operation(
                "changePassword",
                "Change one's own password (every session ends)",
                merge(no_content(), problems(*write)),
                tag=TAG,
                request_body=json_body(PASSWORD_CHANGE, "The current and the new password."),
            )
        },
        "/auth/keys": {
            "get": operation(
                "listKeys",
                "The caller's API keys (all=true: every key of an administrator's tenants)",
                merge(
                    json_ok({"type": "array", "items": ref("ApiKey")}, "The keys."), problems(400)
                ),
                tag=TAG,
                parameters=[TENANT, query("all", "every key", {"enum": ["true", "false"]})],
            ),
            "post": operation(
                "createKey",
                "Create an API key (shown once)",
                merge(
                    json_ok(
                        ref("NewApiKey"),
                        "Created; `key` is shown this once.",
                        201,
                        headers=LOCATION,
                    ),
                    problems(*write),
                ),
                tag=TAG,
                parameters=[TENANT],
                request_body=json_body(ref("KeySpec"), "What the key may do."),
            ),
        },
        "/auth/keys/{key_id}": {
            "delete": operation(
                "revokeKey",
                "Revoke an API key",
                merge(no_content(), problems(404)),
                tag=TAG,
                parameters=[TENANT, path_param("key_id", "the key's id", "0123456789abcdef")],
            )
        },
        "/auth/accounts": {
            "get": operation(
                "listAccounts",
                "The accounts of the administrator's tenants",
                json_ok({"type": "array", "items": ref("Account")}, "The accounts."),
                tag=TAG,
                parameters=[TENANT],
            ),
            "post": operation(
                "createAccount",
                "Create an account",
                merge(json_ok(ref("Account"), "Created.", 201, headers=LOCATION), problems(*write)),
                tag=TAG,
                parameters=[TENANT],
                request_body=json_body(ref("AccountInput"), "The new account."),
            ),
        },
        "/auth/accounts/{name}": {
            method: operation(
                op_id,
                summary,
                responses,
                tag=TAG,
                parameters=[TENANT, path_param("name", "the account's name", "maria")],
                **extra,
            )
            for method, op_id, summary, responses, extra in (
                (
                    "get",
                    "getAccount",
                    "One account",
                    merge(json_ok(ref("Account"), "The account."), problems(404)),
                    {},
                ),
                (
                    "patch",
                    "changeAccount",
                    "Change an account's roles, tenants, state, password",
                    merge(json_ok(ref("Account"), "Changed."), problems(404, *write)),
                    {"request_body": json_body(ref("AccountChange"), "What changes.")},
                ),
                (
                    "delete",
                    "deleteAccount",
                    "Delete an account and revoke its keys",
                    merge(no_content(), problems(400, 404)),
                    {},
                ),
            )
        },
        "/auth/audit": {
            "get": operation(
                "auditLog",
                "Audit events, newest first",
                merge(
                    json_ok(
                        {"type": "array", "items": ref("AuditEvent")},
                        "The events.",
                        headers={
                            "Link": {"description": 'The next page: rel="next".', "schema": STRING}
                        },
                    ),
                    problems(400),
                ),
                tag=TAG,
                parameters=[
                    TENANT,
                    query("event", "an event kind"),
                    query("actor", "a principal's subject"),
                    query("since", "ISO 8601 date-time, inclusive"),
                    query("until", "ISO 8601 date-time, exclusive"),
                    query(
                        "before",
                        "events older than this sequence number",
                        {"type": "string", "pattern": "^[0-9]{1,18}$"},
                    ),
                    query("limit", "1 to 1000", {"type": "string", "pattern": "^[0-9]+$"}),
                    query("tenant", "one of the caller's tenants"),
                ],
            )
        },
    }


def auth_part() -> ApiPart:
    return ApiPart(
        paths=auth_paths(),
        tags={TAG: "Accounts, sessions, API keys and the audit log (docs/api/auth.md)."},
        schemas={
            "Session": SESSION,
            "Me": ME,
            "KeySpec": KEY_SPEC,
            "ApiKey": API_KEY,
            "NewApiKey": NEW_API_KEY,
            "Account": ACCOUNT,
            "AccountInput": ACCOUNT_INPUT,
            "AccountChange": ACCOUNT_CHANGE,
            "AuditEvent": AUDIT_EVENT,
        },
    )
