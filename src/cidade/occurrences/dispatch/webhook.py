"""Webhooks: an HTTP POST of a JSON body to the URL a reporter, a follower or a department
gave, through the egress policy (http/egress.py): a URL a caller gives never makes the server
connect to its own network unless CIDADE_PRIVATE_NETWORKS lets it.

The body says what the message says and, to a reporter or follower, the public view of the
occurrence (telling.public_view): nothing about anyone. ``Cidade-Message`` numbers the
message, the same on every try, so a receiver can drop a repeat (delivery is at least once).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from cidade.http.egress import EgressPolicy, refused_by_policy
from cidade.occurrences.dispatch.channel import FAILED, RETRY, Outcome, http_outcome
from cidade.store.occurrences import OccurrenceMessage

REFUSED = (
    "not sent: the webhook's address is not public and not in CIDADE_PRIVATE_NETWORKS"
    " (the server connects to no other for a caller)"
)


def webhook_body(message: OccurrenceMessage) -> dict[str, Any]:
    doc = message.doc
    return {
        "type": "OccurrenceMessage",
        "id": message.seq,
        "kind": doc.get("kind"),
        "at": doc.get("at"),
        "subject": doc.get("subject"),
        "text": doc.get("text"),
        "occurrence": doc.get("view") or {"number": message.number},
    }


class WebhookChannel:
    def __init__(self, egress: EgressPolicy, timeout: float) -> None:
        self.egress = egress
        self.timeout = timeout
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # Every connection, to any address of a name, to an address the policy permits.
            connector = aiohttp.TCPConnector(socket_factory=self.egress.socket_factory)
            self.session = aiohttp.ClientSession(connector=connector, raise_for_status=False)
        return self.session

    async def send(self, message: OccurrenceMessage) -> Outcome:
        url = message.doc["to"]
        body = orjson.dumps(webhook_body(message))
        headers = {
            "Content-Type": "application/json",
            "Cidade-Message": str(message.seq),
            "User-Agent": "Cidade",
        }
        try:
            async with asyncio.timeout(self.timeout):
                # No redirects: a webhook is the URL given, nowhere else.
                async with self._session().post(
                    url, data=body, headers=headers, allow_redirects=False
                ) as response:
                    await response.read()
                    status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            if refused_by_policy(exc):
                return Outcome(FAILED, REFUSED)
            if isinstance(exc, ValueError):  # aiohttp.InvalidURL among them
                return Outcome.of(FAILED, f"not a URL the webhook can be sent to: {exc}")
            return Outcome.of(RETRY, f"webhook not reached: {type(exc).__name__}")
        return http_outcome(status, "the webhook")

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None
