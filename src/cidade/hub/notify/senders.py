"""Sending one rendered notification to its endpoint: HTTP(S) POST, or an MQTT publish.

Each send answers ``SENT``, ``RETRY`` (the endpoint may take it later: no answer, a timeout, a
5xx, 408, 429, a broker that is down) or ``FAILED`` (the receiver refused it for good: any other
4xx; retrying would only repeat the refusal), and ``FAILED`` too when the endpoint's address is
one the egress policy does not let callers reach (docs/security.md): that is checked on the
address each connection is made to, whatever the subscription's creation found.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Any

import aiohttp
import aiomqtt

from cidade.http.egress import (
    EgressPolicy,
    TargetRefused,
    loggable_url,
    named_tls_context,
    refused_by_policy,
)
from cidade.hub.notify.payload import Rendered

SENT, RETRY, FAILED = "sent", "retry", "failed"

log = logging.getLogger("cidade.notify")


def classify(status: int) -> str:
    if 200 <= status < 300:
        return SENT
    if status in (408, 429) or status >= 500:
        return RETRY
    return FAILED


class HttpSender:
    """HTTP(S) POSTs through one aiohttp session (keep-alive, TCP_NODELAY). aiohttp rather than
    httpx here: on this hot path it measured four times the requests per second of a core
    (bench/notify.py), which is what lets one lane keep up with 1,000 notifications/s."""

    def __init__(self, timeout: float, egress: EgressPolicy) -> None:
        self.timeout = timeout
        self.egress = egress
        self.session: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            # No connection limit: a lane sends one notification at a time, so a dead endpoint
            # holds one connection at most and can never starve the others.
            # Every connection to an address the egress policy permits only.
            connector = aiohttp.TCPConnector(
                limit=0, limit_per_host=0, socket_factory=self.egress.socket_factory
            )
            self.session = aiohttp.ClientSession(
                connector=connector, auto_decompress=False, raise_for_status=False
            )
        return self.session

    async def send(self, uri: str, rendered: Rendered, timeout: float | None) -> str:
        try:
            async with self._session().post(
                uri,
                data=rendered.http_body(),
                headers=rendered.headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            if refused_by_policy(exc):
                return _refusal(uri)
            log.info("notification to %s not delivered: %s", loggable_url(uri), type(exc).__name__)
            return RETRY
        return classify(status)

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None


class MqttSender:
    """One connection per broker (host, port, credentials, version), opened on first use and
    re-opened after a failure."""

    def __init__(self, timeout: float, egress: EgressPolicy) -> None:
        self.timeout = timeout
        self.egress = egress
        self.clients: dict[tuple, aiomqtt.Client] = {}
        self.locks: dict[tuple, asyncio.Lock] = {}

    async def send(
        self, uri: str, rendered: Rendered, timeout: float | None, info: dict[str, str]
    ) -> str:
        parts = urllib.parse.urlsplit(uri)
        topic = urllib.parse.unquote(parts.path.lstrip("/"))
        version = info.get("MQTT-Version", "mqtt3.1.1")
        key = (parts.scheme, parts.hostname, parts.port, parts.username, parts.password, version)
        limit = timeout or self.timeout
        try:
            client = await self._client(key, limit)
            await client.publish(
                topic,
                rendered.mqtt_payload(),
                qos=int(info.get("MQTT-QoS", "0")),
                timeout=limit,
            )
        except TargetRefused:
            return _refusal(uri)
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            log.info("notification to %s not delivered: %s", loggable_url(uri), type(exc).__name__)
            await self._drop(key)
            return RETRY
        return SENT

    async def _client(self, key: tuple, timeout: float) -> aiomqtt.Client:
        lock = self.locks.setdefault(key, asyncio.Lock())
        async with lock:
            client = self.clients.get(key)
            if client is None:
                scheme, host, port, user, password, version = key
                protocol = (
                    aiomqtt.ProtocolVersion.V5
                    if version == "mqtt5.0"
                    else aiomqtt.ProtocolVersion.V311
                )
                port = port or (8883 if scheme == "mqtts" else 1883)
                # The client connects to the address checked here, not to the name (which
                # could resolve elsewhere by then); TLS still verifies the name.
                addresses = await asyncio.wait_for(self.egress.resolve(host or "", port), timeout)
                if not addresses:
                    raise OSError(f"{host} has no address")
                tls = named_tls_context(host or "") if scheme == "mqtts" else None
                client = aiomqtt.Client(
                    addresses[0],
                    port,
                    username=urllib.parse.unquote(user) if user else None,
                    password=urllib.parse.unquote(password) if password else None,
                    protocol=protocol,
                    tls_context=tls,
                    timeout=timeout,
                )
                await asyncio.wait_for(client.__aenter__(), timeout)
                self.clients[key] = client
            return client

    async def _drop(self, key: tuple) -> None:
        client = self.clients.pop(key, None)
        if client is not None:
            try:
                await client.__aexit__(None, None, None)
            except Exception as exc:  # a broken connection's close may fail too: it is gone
                log.info("closing the MQTT connection to %s: %s", key[1], type(exc).__name__)

    async def aclose(self) -> None:
        for key in list(self.clients):
            await self._drop(key)


def _refusal(uri: str) -> str:
    log.warning(
        "notification to %s refused: its address is not public and not in CIDADE_PRIVATE_NETWORKS",
        loggable_url(uri),
    )
    return FAILED


def notifier_info(endpoint: dict[str, Any]) -> dict[str, str]:
    return {item["key"]: item["value"] for item in endpoint.get("notifierInfo", ())}


__all__ = ["FAILED", "RETRY", "SENT", "HttpSender", "MqttSender", "classify", "notifier_info"]
