"""The MQTT side of the device agent: the FIWARE IoT Agent for JSON's topics on a broker.

Devices publish to the broker in ``CIDADE_MQTT``; the bridge subscribes, turns each message into
a ``Measure`` or a ``CommandAnswer`` (messages.py) and hands them to the agent in batches; commands
leave on ``/<apikey>/<device_id>/cmd`` (docs/devices-mqtt.md).

Topics read, as the IoT Agent for JSON subscribes them (the ``/json`` prefix is the current form,
the bare one the legacy form; ``json/...`` without a leading slash is accepted too)::

    /json/<apikey>/<device_id>/attrs            a JSON object of measures
    /json/<apikey>/<device_id>/attrs/<object>   one measure, the payload is its value
    /json/<apikey>/<device_id>/cmdexe           a device's answer to a command

No acknowledged message is lost: the session is persistent (MQTT 5, Clean Start off, a long
Session Expiry) and each QoS 1 message is acknowledged (PUBACK) only after ``Ingest.ingest``
returned, that is after the store committed it. A crash between receipt and commit leaves the
message unacknowledged in the broker's session, which delivers it again at the next connection:
delivery is at least once, a message may come twice, never zero times.

aiomqtt does not expose paho-mqtt's manual acknowledgement (``manual_ack`` / ``ack(mid, qos)``),
so the bridge switches it on through aiomqtt's paho client (``Client._client``): the one place
that reaches inside aiomqtt, checked when the bridge is built and by tests/devices/test_mqtt.py.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from cidade.config import Settings
from cidade.devices.messages import CommandAnswer, Ingest, Measure
from cidade.hub import timefmt

log = logging.getLogger("cidade.devices.mqtt")

# The IoT Agent for JSON's subscriptions (lib/bindings/MQTTBinding.js), without its
# `configuration/commands` topics (configuration retrieval is not offered).
TOPICS: tuple[str, ...] = (
    "/json/+/+/attrs",
    "/json/+/+/attrs/+",
    "/json/+/+/cmdexe",
    "/+/+/attrs",
    "/+/+/attrs/+",
    "/+/+/cmdexe",
    "json/+/+/attrs",
    "json/+/+/attrs/+",
    "json/+/+/cmdexe",
)

MEASURE, ANSWER = "measure", "answer"
WEEK = 7 * 24 * 3600


class MqttUnavailable(Exception):
    """The broker cannot be reached now: the command was not published."""


# -- broker address ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """``mqtt://[user:password@]host[:port]`` or ``mqtts://...`` (TLS), taken apart."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str = ""

    def safe(self) -> str:
        """The address fit for logs: the user name at most, never the password."""
        user = f"{self.username}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """TLS verifying the broker's certificate and name, with CIDADE_MQTT_CA_FILE or the
        system's CAs; None for plain mqtt://."""
        if not self.tls:
            return None
        return ssl.create_default_context(cafile=self.ca_file or None)


def parse_broker_url(url: str, ca_file: str = "") -> BrokerAddress:
    """The broker of CIDADE_MQTT; ValueError (without the password) when it is not one."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts"):
        raise ValueError("CIDADE_MQTT must start with mqtt:// or mqtts://")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("CIDADE_MQTT has an invalid port") from None
    if not parts.hostname:
        raise ValueError("CIDADE_MQTT names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("CIDADE_MQTT is a broker address only: no path, query or fragment")
    tls = scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password is not None else None,
        ca_file=ca_file,
    )


# -- topics --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """What a topic says: a measure (``object_id`` for a single value) or a command answer."""

    kind: str
    apikey: str
    device_id: str
    object_id: str | None = None


def _route(levels: Sequence[str]) -> Route | None:
    if len(levels) < 3 or not levels[0] or not levels[1]:
        return None
    apikey, device_id, what, *rest = levels
    if what == "attrs":
        if not rest:
            return Route(MEASURE, apikey, device_id)
        if len(rest) == 1 and rest[0]:
            return Route(MEASURE, apikey, device_id, rest[0])
    elif what == "cmdexe" and not rest:
        return Route(ANSWER, apikey, device_id)
    return None


def parse_topic(topic: str) -> Route | None:
    """The route of a device topic, or None when the topic is not one of the agent's."""
    if topic.startswith("/"):
        levels = topic[1:].split("/")
    elif topic.startswith("json/"):
        levels = topic.split("/")
    else:
        return None
    if levels[0] == "json":
        route = _route(levels[1:])
        if route is not None:
            return route
        if not topic.startswith("/"):
            return None
    # The legacy form, /<apikey>/<device_id>/...; an API key may itself be "json".
    return _route(levels)


def command_topic(apikey: str, device_id: str) -> str:
    """Where the IoT Agent for JSON publishes a device's commands (no protocol prefix)."""
    for name, value in (("apikey", apikey), ("device id", device_id)):
        if not value or any(c in value for c in "/+#\0"):
            raise ValueError(f"{name} {value!r} cannot be an MQTT topic level")
    return f"/{apikey}/{device_id}/cmd"


def _topic_for_log(topic: str) -> str:
    """A topic without its API key (the device group's shared secret), shortened."""
    levels = topic.split("/")
    start = 2 if levels[:2] == ["", "json"] else 1 if levels[0] in ("", "json") else 0
    if start < len(levels):
        levels[start] = "***"
    text = "/".join(levels)
    return text if len(text) <= 200 else text[:200] + "..."


# -- counters ------------------------------------------------------------------------------------


@dataclass(slots=True)
class MqttCounters:
    """Totals since the bridge was built (for metrics)."""

    received: int = 0  # messages taken from the broker, any topic
    measures: int = 0  # handed to ingest() as Measures
    command_answers: int = 0  # handed to command_answers()
    malformed_topics: int = 0  # not an agent topic: acknowledged and dropped
    batches: int = 0  # ingest batches delivered (then acknowledged)
    refused: int = 0  # messages ingest() refused (its reason is logged by the agent)
    ingest_failures: int = 0  # ingest calls that raised: the batch waits and is tried again
    connections: int = 0  # successful connections to the broker
    connection_failures: int = 0  # failed connections or lost connections
    commands_sent: int = 0  # commands the broker acknowledged

    def snapshot(self) -> dict[str, int]:
        return asdict(self)


# -- the bridge ----------------------------------------------------------------------------------


class MqttBridge:
    """Subscribes to the agent's topics, hands batches to the agent, acknowledges after commit;
    publishes commands (``CommandSink``). ``start()`` returns at once and the bridge connects,
    and reconnects, in the background."""

    def __init__(
        self,
        settings: Settings,
        ingest: Ingest,
        *,
        batch_max: int = 500,
        batch_wait: float = 0.005,
        receive_maximum: int | None = None,
        session_expiry: int = WEEK,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        keepalive: int = 30,
        timeout: float = 10.0,
        topics: Sequence[str] = TOPICS,
    ) -> None:
        if not settings.mqtt:
            raise ValueError("CIDADE_MQTT is empty: no broker to connect to")
        self.address = parse_broker_url(settings.mqtt, settings.mqtt_ca_file)
        self.client_id = settings.mqtt_client_id
        self.ingest = ingest
        self.batch_max = batch_max
        self.batch_wait = batch_wait
        # Unacknowledged QoS 1 messages the broker may send before it waits for PUBACKs: one
        # batch being committed and the next one arriving.
        self.receive_maximum = min(receive_maximum or 2 * batch_max, 65535)
        self.session_expiry = session_expiry
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.keepalive = keepalive
        self.timeout = timeout
        self.topics = tuple(topics)
        self.counters = MqttCounters()
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = True  # waiting for a message (nothing in hand that a stop would waste)
        if not callable(getattr(paho.Client, "ack", None)):
            raise RuntimeError("paho-mqtt without manual acknowledgement (needs paho-mqtt >= 2)")

    # -- life cycle

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name="cidade-mqtt-bridge")

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand (ingest, then PUBACK), then disconnect; the session stays
        with the broker, which keeps what arrives meanwhile."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        if self._idle:
            task.cancel()
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if not done:  # an agent that does not return: its batch stays unacknowledged
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved (it was logged by _run)

    # -- commands (CommandSink)

    async def send_command(self, apikey: str, device_id: str, body: bytes) -> None:
        """Publish ``body`` to ``/<apikey>/<device_id>/cmd`` with QoS 1 and wait for the
        broker's PUBACK; MqttUnavailable when not connected or not acknowledged in time."""
        topic = command_topic(apikey, device_id)
        client = self._client
        if client is None or not self._connected.is_set():
            raise MqttUnavailable(f"not connected to {self.address.safe()}")
        try:
            await client.publish(topic, body, qos=1, timeout=self.timeout)
        except aiomqtt.MqttError as exc:
            raise MqttUnavailable(f"{self.address.safe()}: {exc}") from None
        self.counters.commands_sent += 1

    # -- connection

    def _new_client(self, inbox: asyncio.Queue) -> aiomqtt.Client:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry
        properties.ReceiveMaximum = self.receive_maximum
        client = aiomqtt.Client(
            self.address.host,
            self.address.port,
            username=self.address.username,
            password=self.address.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=properties,
            keepalive=self.keepalive,
            timeout=self.timeout,
            tls_context=self.address.ssl_context(),
            queue_type=lambda maxsize=0: inbox,  # type: ignore[arg-type]
        )
        paho_client = client._client  # manual PUBACK: not exposed by aiomqtt
        paho_client.manual_ack_set(True)
        return client

    async def _run(self) -> None:
        delay = self.backoff_initial
        while not self._stopping.is_set():
            try:
                inbox: asyncio.Queue[aiomqtt.Message] = asyncio.Queue()
                client = self._new_client(inbox)
                async with client:
                    self._client = client
                    self.counters.connections += 1
                    delay = self.backoff_initial
                    await self._subscribe(client)
                    log.info("MQTT: connected to %s as %r", self.address.safe(), self.client_id)
                    self._connected.set()
                    await self._consume(client, inbox)
                    return  # stopping
            except aiomqtt.MqttError as exc:
                if self._stopping.is_set():
                    return
                self.counters.connection_failures += 1
                log.warning("MQTT: %s: %s; trying again in %.1f s", self.address.safe(), exc, delay)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self._stopping.is_set():
                    return
                self.counters.connection_failures += 1
                log.exception("MQTT: bridge to %s failed; trying again", self.address.safe())
            finally:
                self._connected.clear()
                self._client = None
            self._idle = True
            try:
                pause = delay * random.uniform(0.8, 1.2)
                await asyncio.wait_for(self._stopping.wait(), pause)
            except TimeoutError:
                pass
            delay = min(delay * 2, self.backoff_max)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        granted = await client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])
        for topic, code in zip(self.topics, granted, strict=False):
            value = getattr(code, "value", code)
            if value != 1:
                log.warning("MQTT: subscription %s granted %s, not QoS 1", topic, code)

    # -- receiving

    async def _consume(self, client: aiomqtt.Client, inbox: asyncio.Queue) -> None:
        """Batches: the first message, then whatever is already in ``inbox`` (aiomqtt's queue,
        ours), then what comes within ``batch_wait``, up to ``batch_max``."""
        # aiomqtt's iterator is what notices a lost connection; it is awaited by one task at a
        # time, never cancelled by a timeout (a message it had already taken would be dropped,
        # unacknowledged until the next connection), and the inbox is only drained directly
        # while no such task waits (so the order stays the broker's).
        messages = client.messages
        loop = asyncio.get_running_loop()
        waiting: asyncio.Task[aiomqtt.Message] | None = None

        async def receive(timeout: float | None) -> aiomqtt.Message | None:
            nonlocal waiting
            if waiting is None:
                waiting = asyncio.ensure_future(anext(messages))
            done, _ = await asyncio.wait({waiting}, timeout=timeout)
            if not done:
                return None
            task, waiting = waiting, None
            return task.result()

        try:
            while True:
                self._idle = True
                if self._stopping.is_set():
                    return
                message = await receive(None)
                self._idle = False
                batch: list[aiomqtt.Message] = []
                deadline = loop.time() + self.batch_wait
                while message is not None:
                    batch.append(message)
                    while len(batch) < self.batch_max and not inbox.empty():
                        batch.append(inbox.get_nowait())
                    remaining = deadline - loop.time()
                    if len(batch) >= self.batch_max or remaining <= 0:
                        break
                    message = await receive(remaining)
                await self._deliver(client, batch)
        finally:
            if waiting is not None:
                waiting.cancel()

    async def _deliver(self, client: aiomqtt.Client, batch: list[aiomqtt.Message]) -> None:
        """Hand a batch to the agent in arrival order, one call per run of the same kind, and
        acknowledge each run once the agent returned (PUBACKs leave in arrival order)."""
        received_at = timefmt.now()
        runs: list[tuple[str, list[Any], int]] = []  # kind, items, index of its last message
        for index, message in enumerate(batch):
            self.counters.received += 1
            topic = message.topic.value
            route = parse_topic(topic)
            if route is None:
                self.counters.malformed_topics += 1
                log.warning(
                    "MQTT: ignored a message on %s: not a device topic", _topic_for_log(topic)
                )
                continue
            payload = message.payload
            if not isinstance(payload, bytes):
                payload = str(payload).encode() if payload is not None else b""
            if route.kind == MEASURE:
                item: Any = Measure(
                    route.apikey,
                    route.device_id,
                    payload,
                    route.object_id,
                    received_at,
                    "mqtt",
                )
            else:
                item = CommandAnswer(route.apikey, route.device_id, payload, received_at)
            if runs and runs[-1][0] == route.kind:
                runs[-1][1].append(item)
                runs[-1] = (route.kind, runs[-1][1], index)
            else:
                runs.append((route.kind, [item], index))
        acked = 0
        for kind, items, last in runs:
            if not await self._hand_over(kind, items):
                return  # stopping: unacknowledged, the broker delivers them again
            self._ack(client, batch[acked : last + 1])
            acked = last + 1
        self._ack(client, batch[acked:])
        self.counters.batches += 1

    async def _hand_over(self, kind: str, items: list[Any]) -> bool:
        """Give items to the agent until it takes them; False when the bridge stops first."""
        delay = 0.1
        while True:
            try:
                if kind == MEASURE:
                    outcome = await self.ingest.ingest(items)
                    self.counters.measures += len(items)
                    self.counters.refused += sum(1 for reason in outcome if reason is not None)
                else:
                    await self.ingest.command_answers(items)
                    self.counters.command_answers += len(items)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters.ingest_failures += 1
                log.warning(
                    "MQTT: the agent could not take %d messages (%s: %s); trying again in %.1f s",
                    len(items),
                    type(exc).__name__,
                    exc,
                    delay,
                    exc_info=self.counters.ingest_failures == 1,
                )
                if self._stopping.is_set():
                    return False
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay)
                    return False
                except TimeoutError:
                    pass
                delay = min(delay * 2, 5.0)

    @staticmethod
    def _ack(client: aiomqtt.Client, messages: Sequence[aiomqtt.Message]) -> None:
        paho_client = client._client
        for message in messages:
            if message.qos > 0:
                paho_client.ack(message.mid, message.qos)


__all__ = [
    "TOPICS",
    "BrokerAddress",
    "MqttBridge",
    "MqttCounters",
    "MqttUnavailable",
    "Route",
    "command_topic",
    "parse_broker_url",
    "parse_topic",
]
