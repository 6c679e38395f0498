"""SMS through a gateway: the interface a city plugs its provider behind, and the one gateway
Cidade ships, which POSTs ``{"to": "+351...", "text": "..."}`` as JSON to
CIDADE_SMS_GATEWAY_URL (with ``Authorization: Bearer CIDADE_SMS_GATEWAY_TOKEN`` when set): a
few lines of glue in front of any provider's API (or the provider's own endpoint, when it
takes that body).

A gateway answers 2xx when it took the message, 408/429/5xx to be asked again later, any
other status to refuse it for good. The gateway is the deployment's, not a caller's: it is
reached whatever its address.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Protocol

import aiohttp
import orjson

from cidade.occurrences.dispatch.channel import RETRY, Outcome, http_outcome
from cidade.store.occurrences import OccurrenceMessage


class SmsGateway(Protocol):
    """What sends one SMS: ``to`` a phone number as the citizen gave it (digits, spaces, +,
    -, parentheses), ``text`` the message (the gateway splits or cuts it as its network
    needs)."""

    async def send_sms(self, to: str, text: str) -> Outcome: ...

    async def aclose(self) -> None: ...


def check_gateway_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the SMS gateway is an http(s) URL")
    return url


class HttpSmsGateway:
    """POST {to, text} as JSON to the gateway's URL."""

    def __init__(self, url: str, token: str, timeout: float) -> None:
        self.url = check_gateway_url(url)
        self.token = token
        self.timeout = timeout
        self.session: aiohttp.ClientSession | None = None

    async def send_sms(self, to: str, text: str) -> Outcome:
        if self.session is None:
            self.session = aiohttp.ClientSession(raise_for_status=False)
        headers = {"Content-Type": "application/json", "User-Agent": "Cidade"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            async with asyncio.timeout(self.timeout):
                async with self.session.post(
                    self.url, data=orjson.dumps({"to": to, "text": text}), headers=headers
                ) as response:
                    await response.read()
                    status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return Outcome.of(RETRY, f"SMS gateway not reached: {type(exc).__name__}")
        return http_outcome(status, "the SMS gateway")

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class SmsChannel:
    def __init__(self, gateway: SmsGateway) -> None:
        self.gateway = gateway

    async def send(self, message: OccurrenceMessage) -> Outcome:
        return await self.gateway.send_sms(message.doc["to"], message.doc["text"])

    async def aclose(self) -> None:
        await self.gateway.aclose()
