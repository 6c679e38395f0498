"""The audit trail: security-relevant events, appended to the store's append-only log.

What goes in is chosen so that the log itself leaks nothing: principals by subject (account
name, key id, token subject), never a password, a key, a token, a cookie or a request body.
"""

from __future__ import annotations

import logging
from typing import Any

from cidade.auth.principal import Principal
from cidade.ngsild import timefmt
from cidade.store.base import AuditQuery, Store

log = logging.getLogger("cidade.audit")

# Every kind of event the platform records (docs/security.md lists them).
EVENTS = {
    "login": "a successful log-in",
    "login.failed": "a failed log-in",
    "logout": "a log-out",
    "auth.failed": "a request with credentials that do not hold (bad key, bad token)",
    "access.denied": "a request refused for want of permission",
    "key.created": "an API key created",
    "key.revoked": "an API key revoked",
    "account.created": "an account created",
    "account.changed": "an account's roles, tenants, departments or state changed",
    "account.deleted": "an account deleted",
    "password.changed": "a password changed",
    "command.sent": "a command sent to a device (who, which entity, which command, its value)",
    "command.refused": "a command that could not be sent (no such command, no transport)",
    "command.result": "a device's answer to a command, or its expiry (OK, ERROR, EXPIRED)",
    "occurrence.contact": "a reporter's contact read by the operations room (which occurrence)",
    "occurrence.messages": "an occurrence's message log (with addresses) read (which occurrence)",
    "occurrences.configured": "a department, category, area or sensor rule set or removed",
}


class Audit:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(
        self,
        event: str,
        actor: Principal | str,
        *,
        tenant: str = "",
        outcome: str = "ok",
        target: str = "",
        **detail: Any,
    ) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        subject = actor if isinstance(actor, str) else actor.subject
        entry = {
            "at": timefmt.now(),
            "tenant": tenant,
            "actor": subject,
            "event": event,
            "outcome": outcome,
            "target": target,
            "detail": detail,
        }
        await self.store.append_audit([entry])
        # The log says that something happened; who, and to whom, is for the audit log alone
        # (account names can be people's names).
        log.info("audit event %s outcome=%s", event, outcome)

    async def events(self, query: AuditQuery) -> list[dict[str, Any]]:
        return await self.store.audit_events(query)
