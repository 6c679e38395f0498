"""/occurrences/{number}/messages and /occurrences/{number}/followers: the log of what an
occurrence's reporter, followers and departments were told, and following an occurrence.

The log names addresses (personal data): it needs occurrences.contact. Anyone who may report
may follow an occurrence they can see (one of a category offered to citizens, or any, with
occurrences.read); a follower's webhook must be one the server may reach (the egress policy).
Reads of the log are audited. Errors are ProblemDetails (occurrences/errors.py, the
platform's handlers).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from cidade.auth.audit import Audit
from cidade.auth.gate import grant_of
from cidade.auth.routes import GuardedRoute, guarded
from cidade.http.bodies import JSON, read_json
from cidade.http.egress import EgressPolicy, TargetRefused
from cidade.ngsild import timefmt
from cidade.occurrences.errors import OccurrenceError, OccurrenceNotFound
from cidade.occurrences.service import OccurrenceService
from cidade.store.occurrences import OccurrenceMessage

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
# The largest number an occurrence can have (the stores' 64-bit integer).
MAX_NUMBER = 2**63 - 1
FOLLOW_MEMBERS = ("email", "phone", "webhook", "notify")
MAX_FOLLOW_BYTES = 16 * 1024


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON)


def message_view(message: OccurrenceMessage) -> dict[str, Any]:
    """One entry of the log as the API shows it (to staff with occurrences.contact)."""
    doc = message.doc
    return {
        "seq": message.seq,
        "number": message.number,
        "at": doc.get("at"),
        "kind": doc.get("kind"),
        "recipient": doc.get("recipient"),
        "channel": doc.get("channel"),
        "to": doc.get("to"),
        "subject": doc.get("subject"),
        "text": doc.get("text"),
        "state": message.state,
        "attempts": message.attempts,
        "next_at": timefmt.from_epoch(message.next_at) if message.state == "pending" else None,
        "result": message.result,
    }


def _cursor(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or not low <= int(raw) <= high:
        raise OccurrenceError(f"{name} is a whole number from {low} to {high}", field=name)
    return int(raw)


class MessagesApi:
    def __init__(
        self,
        service: OccurrenceService,
        audit: Audit,
        egress: EgressPolicy | None = None,
        max_body_bytes: int = MAX_FOLLOW_BYTES,
    ) -> None:
        self.service = service
        self.audit = audit
        self.egress = egress or EgressPolicy()
        self.max_body_bytes = min(max_body_bytes, MAX_FOLLOW_BYTES)

    @staticmethod
    def _number(request: Request) -> int:
        number = request.path_params["number"]
        if not 0 < number <= MAX_NUMBER:
            raise OccurrenceNotFound(f"no occurrence {number}")
        return number

    async def messages(self, request: Request) -> Response:
        """The message log of one occurrence, oldest first, a page at a time (``after`` the
        last ``seq`` of the page before)."""
        tenant = grant_of(request).tenant
        number = self._number(request)
        limit = _cursor(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        after = _cursor(request, "after", 0, 0, MAX_NUMBER)
        grant = grant_of(request)
        await self.service.get(tenant, number)
        # Addresses are read: who read whose, as with the reporter's contact (api.py).
        await self.audit.record(
            "occurrence.messages", grant.principal, tenant=tenant, target=str(number)
        )
        page = await self.service.store.occurrence_messages(
            tenant, number, after=after, limit=limit
        )
        return _json(
            {
                "number": number,
                "messages": [message_view(m) for m in page],
                "next_after": page[-1].seq if len(page) == limit else None,
            }
        )

    async def follow(self, request: Request) -> Response:
        """Follow an occurrence: told of its changes by e-mail, SMS or webhook."""
        grant = grant_of(request)
        number = self._number(request)
        body, _ = await read_json(request, self.max_body_bytes)
        if not isinstance(body, dict):
            raise OccurrenceError("the body is an object: {email | phone | webhook, notify}")
        unknown = sorted(set(body) - set(FOLLOW_MEMBERS))
        if unknown:
            raise OccurrenceError(
                f"unknown member {', '.join(map(repr, unknown))}: the body takes"
                f" {', '.join(FOLLOW_MEMBERS)}",
                field=unknown[0],
            )
        for key, value in body.items():
            if value is not None and not isinstance(value, str):
                raise OccurrenceError(f"{key} is a string", field=key)
        found = await self.service.get(grant.tenant, number)
        if not grant.may("occurrences.read"):
            config = await self.service.config(grant.tenant)
            category = config.category(found.doc["category"])
            if category is None or not category.public:
                # Not one the caller may see: as absent, so its existence is not told either.
                raise OccurrenceNotFound(f"no occurrence {number}")
        webhook = body.get("webhook")
        if webhook and webhook.lower().startswith(("http://", "https://")):
            await self._reachable(webhook)
        await self.service.follow(grant.tenant, number, body)
        # Nothing more: how many follow is the operations room's (views.py).
        return _json({"number": number, "following": True}, 201)

    async def _reachable(self, url: str) -> None:
        try:
            host = urllib.parse.urlsplit(url).hostname
        except ValueError:
            host = None
        if not host:
            raise OccurrenceError("webhook is not a URL", field="webhook")
        try:
            await self.egress.check_host(host)
        except TargetRefused:
            raise OccurrenceError(
                "webhook: its address is not one this server may connect to (a public one)",
                field="webhook",
            ) from None

    def routes(self) -> list[GuardedRoute]:
        return [
            guarded(
                "/occurrences/{number:int}/messages",
                {"GET": (self.messages, "occurrences.contact")},
            ),
            guarded(
                "/occurrences/{number:int}/followers",
                {"POST": (self.follow, "occurrences.report")},
            ),
        ]
