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

The MQTT client is gmqtt, whose receive path costs a sixth of paho-mqtt's for MQTT 5
(bench/mqtt_clients.py). It has no public way to acknowledge a message later than when its
handler returns but a coroutine per message (a task, a future and a PUBACK written alone, a fifth
of the bridge's time at full rate), so ``_Client`` takes QoS 1 messages with their packet ids
from gmqtt's publish handler and writes the PUBACKs of a committed batch at once (``puback``).
The bridge reconnects by itself, with backoff, on a new client each time (``_Client.reconnect``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import gmqtt
from gmqtt.mqtt.constants import MQTTCommands, MQTTv50
from gmqtt.mqtt.package import CommandWithMidPacket
from gmqtt.storage import PersistentStorage

from cidade.config import Settings
from cidade.devices.messages import CommandAnswer, Ingest, Measure
from cidade.ngsild import timefmt
from cidade.store.base import WriteChain

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


class Route(NamedTuple):
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


# -- the MQTT client ------------------------------------------------------------------------------


class _Quiet(logging.LoggerAdapter):
    """gmqtt's own log lines, at DEBUG: the bridge reports connections, losses and refusals
    itself, and gmqtt's wording ("not reconnecting") would contradict what the bridge does."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.log(logging.DEBUG, msg, *args, **kwargs)

    def isEnabledFor(self, level: int) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)

    def debug(self, msg: object, *args: Any, **kwargs: Any) -> None:
        # gmqtt logs every packet received, twice, at DEBUG: the shortest way out when it is off
        # (through LoggerAdapter's own debug, it was 4% of the event loop's time at full rate).
        if self.logger.isEnabledFor(logging.DEBUG):
            self.logger.debug(msg, *args, **kwargs)


def _demote(record: logging.LogRecord) -> bool:
    # gmqtt's protocol module logs through its own logger, e.g. a PUBACK that found its
    # connection already closed (the broker delivers that message again: nothing is lost).
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return True


class _Outbox(PersistentStorage):
    """gmqtt's store of our unacknowledged QoS 1 publishes, telling who waits for a PUBACK."""

    def __init__(self) -> None:
        super().__init__()
        self.last_mid: int | None = None
        self.waiting: dict[int, asyncio.Future[None]] = {}

    def push_message(self, mid: int, raw_package: bytes) -> None:
        super().push_message(mid, raw_package)
        self.last_mid = mid

    def remove_message_by_mid(self, mid: int) -> None:
        super().remove_message_by_mid(mid)
        waiter = self.waiting.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class _Client(gmqtt.Client):
    """One connection's client. gmqtt would reconnect by itself (with a fixed delay, on the same
    client); the bridge does it instead, with backoff and on a new client, so a lost connection
    is only reported here. QoS 1 messages go to ``received(client, topic, payload, packet id)``
    and are acknowledged by ``puback``, nothing else."""

    def __init__(
        self,
        client_id: str,
        lost: asyncio.Event,
        received: Callable[[_Client, str, bytes, int], None],
        **kwargs: Any,
    ) -> None:
        self.outbox = _Outbox()
        super().__init__(client_id, persistent_storage=self.outbox, **kwargs)
        self.lost = lost
        # gmqtt's publish handler parses the packet, then hands a QoS 1 message to this method
        # with its packet id; in its place, gmqtt would run the message's handler as a task and
        # send the PUBACK when it returns. puback reads the protocol version from the client's
        # connection state. Both private to gmqtt 0.8: checked here, so that a gmqtt that
        # changed fails loudly at the first connection rather than acknowledging before commit.
        handler = getattr(self, "_package_handler", None)
        state = getattr(self, "_connection_state", None)
        if not callable(getattr(handler, "_handle_qos_1_publish_packet", None)) or not hasattr(
            state, "protocol_version"
        ):
            raise RuntimeError(
                f"gmqtt {getattr(gmqtt, '__version__', '?')} has no "
                "_package_handler._handle_qos_1_publish_packet or _connection_state: the bridge "
                "needs gmqtt 0.8"
            )

        def qos_1(mid: int, payload: bytes, topic: str, _properties: Any) -> None:
            received(self, topic, payload, mid)

        handler._handle_qos_1_publish_packet = qos_1  # type: ignore[union-attr]
        parse = handler._handle_publish_packet  # type: ignore[union-attr]

        def publish(cmd: int, packet: bytes) -> None:
            # What devices send, QoS 1 without MQTT 5 properties, read here in a few slices:
            # gmqtt's parser (format strings built per packet, a properties dict) was a third of
            # this process's time at full rate. Anything else still goes through it.
            if cmd & 0x06 == 0x02 and len(packet) > 4:  # QoS 1
                end = 2 + ((packet[0] << 8) | packet[1])  # the topic's, then the packet id
                start = end + 2
                if state.protocol_version >= MQTTv50:  # type: ignore[union-attr]
                    start += 1  # the properties' length: one byte, 0 when there are none
                    plain = start <= len(packet) and packet[start - 1] == 0
                else:
                    plain = start <= len(packet)
                if plain and end > 2:
                    try:
                        topic = packet[2:end].decode()
                    except UnicodeDecodeError:
                        pass
                    else:
                        received(self, topic, packet[start:], (packet[end] << 8) | packet[end + 1])
                        return
            parse(cmd, packet)

        handler._handle_publish_packet = publish  # type: ignore[union-attr]

    async def reconnect(self, delay: bool = False) -> None:
        self.lost.set()

    def puback(self, mids: Sequence[int]) -> None:
        """The PUBACKs of these QoS 1 messages, in one write, in order; none once the connection
        is lost: the broker delivers those messages again on the next one."""
        connection = self._connection
        if not mids or connection is None or self.lost.is_set() or connection.is_closing():
            return
        version = self._connection_state.protocol_version
        connection.send_package(
            b"".join(
                CommandWithMidPacket.build_package(
                    MQTTCommands.PUBACK, mid, False, proto_ver=version
                )
                for mid in mids
            )
        )


# -- the bridge ----------------------------------------------------------------------------------

# A message received, not acknowledged yet: (its connection's client, topic, payload, its packet
# id; None for QoS 0).
_Inboxed = tuple[_Client, str, bytes, "int | None"]
# What a batch becomes: (kind, the agent's prepared measures or the answers, messages, index of
# the batch's last message in it).
_Step = tuple[str, Any, int, int]
_STOPPED = object()
RETRY_FIRST, RETRY_MAX = 0.1, 5.0  # seconds before a batch the agent could not take is tried again


@dataclass(slots=True, eq=False)
class _Commit:
    """A batch being committed."""

    task: asyncio.Task[bool] = field(init=False)
    failed: bool = False  # a write of it failed: tried again before anything after it


class ConnectedTask:
    """What the server sees of a bridge (MqttBridge, mqtt_process.BridgeProcess): a task that
    ``start()`` begins and returns at once, connected or not, until ``stop()``."""

    _task: asyncio.Task[None] | None
    _connected: asyncio.Event
    _stopping: asyncio.Event
    _task_name = "cidade-mqtt-bridge"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def start(self) -> None:
        if self._task is not None and not self._task.done():
            return
        self._stopping.clear()
        self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def _run(self) -> None:
        raise NotImplementedError

    async def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True when the bridge stops meanwhile."""
        if self._stopping.is_set():
            return True
        try:
            await asyncio.wait_for(self._stopping.wait(), delay)
            return True
        except TimeoutError:
            return False


class MqttBridge(ConnectedTask):
    """Subscribes to the agent's topics, hands batches to the agent, acknowledges after commit;
    publishes commands (``CommandSink``). ``start()`` returns at once and the bridge connects,
    and reconnects, in the background."""

    def __init__(
        self,
        settings: Settings,
        ingest: Ingest,
        *,
        batch_max: int = 8000,
        batch_wait: float = 0.005,
        pipeline: int = 2,
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
        self.pipeline = pipeline  # batches handed to the agent at once, each after the other
        self._chain_numbers = itertools.count(1)
        self._chain = WriteChain(next(self._chain_numbers))
        # Unacknowledged QoS 1 messages the broker may send before it waits for PUBACKs: the
        # batches being committed, the next one being prepared and one more arriving.
        self.receive_maximum = min(receive_maximum or (pipeline + 2) * batch_max, 65535)
        self.session_expiry = session_expiry
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.keepalive = keepalive
        self.timeout = timeout
        self.topics = tuple(topics)
        self.counters = MqttCounters()
        self._client: _Client | None = None
        self._connected = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = True  # waiting for a message (nothing in hand that a stop would waste)
        # Messages received and not yet acknowledged, in arrival order: (client, topic,
        # payload, its packet id; None for QoS 0).
        self._inbox: deque[_Inboxed] = deque()
        self._wake = asyncio.Event()
        self._log = _Quiet(log.getChild("gmqtt"), {})
        protocol_log = logging.getLogger("gmqtt.mqtt.protocol")
        if _demote not in protocol_log.filters:
            protocol_log.addFilter(_demote)

    # -- life cycle

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand (ingest, then PUBACK), then disconnect; the session stays
        with the broker, which keeps what arrives meanwhile."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wake.set()
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
        if client is None or not self._connected.is_set() or client.lost.is_set():
            raise MqttUnavailable(f"not connected to {self.address.safe()}")
        acked = asyncio.get_running_loop().create_future()
        client.publish(topic, body, qos=1)
        mid = client.outbox.last_mid
        assert mid is not None
        client.outbox.waiting[mid] = acked
        try:
            await asyncio.wait_for(acked, self.timeout)
        except TimeoutError:
            client.outbox.waiting.pop(mid, None)
            raise MqttUnavailable(
                f"{self.address.safe()} did not acknowledge the command in time"
            ) from None
        self.counters.commands_sent += 1

    # -- connection

    def _new_client(self, lost: asyncio.Event) -> _Client:
        client = _Client(
            self.client_id,
            lost,
            self._received,
            clean_session=False,
            # Only QoS 2 would reach gmqtt's acknowledgement, and the subscriptions are QoS 1:
            # had the broker sent one anyway, it gets no PUBREC before its handler returned.
            optimistic_acknowledgement=False,
            logger=self._log,
            session_expiry_interval=self.session_expiry,
            receive_maximum=self.receive_maximum,
        )
        if self.address.username is not None:
            client.set_auth_credentials(self.address.username, self.address.password)
        client.on_message = self._on_message
        client.on_disconnect = lambda *_: lost.set()
        return client

    async def _run(self) -> None:
        delay = self.backoff_initial
        while not self._stopping.is_set():
            lost = asyncio.Event()
            client = self._new_client(lost)
            try:
                try:
                    await asyncio.wait_for(
                        client.connect(
                            self.address.host,
                            self.address.port,
                            ssl=self.address.ssl_context() or False,
                            keepalive=self.keepalive,
                            version=MQTTv50,
                        ),
                        self.timeout,
                    )
                except TimeoutError:
                    raise ConnectionError("no answer to CONNECT in time") from None
                self._client = client
                self.counters.connections += 1
                delay = self.backoff_initial
                await self._subscribe(client)
                log.info("MQTT: connected to %s as %r", self.address.safe(), self.client_id)
                self._connected.set()
                await self._consume(client)
                if self._stopping.is_set():
                    return
                raise ConnectionError("connection lost")
            except (OSError, gmqtt.MQTTConnectError) as exc:
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
                await self._close(client)
            self._idle = True
            if await self._pause(delay * random.uniform(0.8, 1.2)):
                return
            delay = min(delay * 2, self.backoff_max)

    async def _close(self, client: _Client) -> None:
        """Disconnect (the session stays with the broker), then let go of the messages of this
        connection that were never acknowledged: with the connection closed, no PUBACK leaves
        for them and the broker delivers them again."""
        client.lost.set()
        try:
            await asyncio.wait_for(asyncio.shield(client.disconnect()), 5.0)
        except Exception:  # already gone: nothing to say goodbye to
            pass
        self._inbox = deque(item for item in self._inbox if item[0] is not client)

    async def _subscribe(self, client: _Client) -> None:
        answered: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()

        def on_subscribe(_client: Any, mid: int, granted: tuple[int, ...], _props: Any) -> None:
            if not answered.done():
                answered.set_result(granted)

        client.on_subscribe = on_subscribe
        client.subscribe([gmqtt.Subscription(t, qos=1) for t in self.topics])
        try:
            granted = await asyncio.wait_for(answered, self.timeout)
        except TimeoutError:
            raise ConnectionError("no answer to SUBSCRIBE in time") from None
        for topic, code in zip(self.topics, granted, strict=False):
            if code != 1:
                log.warning("MQTT: subscription %s granted %s, not QoS 1", topic, code)

    # -- receiving

    def _received(self, client: _Client, topic: str, payload: bytes, mid: int) -> None:
        """A QoS 1 message: acknowledged once the batch holding it was committed (``_ack``)."""
        self._inbox.append((client, topic, payload, mid))
        self._wake.set()

    def _on_message(
        self, client: _Client, topic: str, payload: bytes, qos: int, properties: Any
    ) -> int:
        """gmqtt's handler of the other messages: QoS 0, which owe no acknowledgement."""
        self._inbox.append((client, topic, payload, None))
        self._wake.set()
        return 0

    async def _consume(self, client: _Client) -> None:
        """Batches: what is in the inbox, after waiting ``batch_wait`` for more when it holds
        less than ``batch_max`` and nothing is being committed; until the connection is lost
        or the bridge stops. Pipelined: a batch is prepared (profiles, mapping) while the ones
        before it are committed, and handed to the store while the one before it is still
        being committed (``pipeline`` at once), on one WriteChain, so that the store applies
        them in the broker's order and none after one that failed; PUBACKs leave in order."""
        in_flight: deque[_Commit] = deque()
        try:
            while True:
                self._idle = not in_flight
                while not self._inbox and not client.lost.is_set():
                    if self._stopping.is_set():
                        return
                    self._wake.clear()
                    lost = asyncio.ensure_future(client.lost.wait())
                    woken = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({lost, woken}, return_when=asyncio.FIRST_COMPLETED)
                    lost.cancel()
                    woken.cancel()
                if client.lost.is_set() or self._stopping.is_set():
                    return
                self._idle = False
                if not in_flight and len(self._inbox) < self.batch_max and self.batch_wait:
                    await asyncio.sleep(self.batch_wait)
                batch = []
                while self._inbox and len(batch) < self.batch_max:
                    batch.append(self._inbox.popleft())
                steps = await self._prepare(batch)
                # Nothing handed over behind a batch whose write failed until it is written:
                # it is tried again on a new chain, which must not let a later batch pass it.
                while in_flight and (len(in_flight) >= self.pipeline or in_flight[-1].failed):
                    if not await in_flight.popleft().task:
                        return
                if steps is None:
                    return  # stopping: the batch goes unacknowledged
                commit = _Commit()
                previous = in_flight[-1].task if in_flight else None
                commit.task = asyncio.ensure_future(
                    self._commit(client, batch, steps, previous, commit)
                )
                in_flight.append(commit)
                # Let it hand its first write to the store before the next batch is prepared:
                # preparing yields only every few hundred messages (profiles are cached).
                await asyncio.sleep(0)
        finally:
            # The batches in hand are committed and acknowledged before the bridge stops.
            for commit in in_flight:
                await asyncio.shield(commit.task)

    async def _prepare(self, batch: list[_Inboxed]) -> list[_Step] | None:
        """Runs of the same kind in arrival order: measures prepared by the agent, command
        answers as they are; None when the bridge stops first."""
        received_at = timefmt.now()
        runs: list[tuple[str, list[Any], int]] = []  # kind, items, index of its last message
        for index, (_, topic, payload, _) in enumerate(batch):
            self.counters.received += 1
            route = parse_topic(topic)
            if route is None:
                self.counters.malformed_topics += 1
                log.warning(
                    "MQTT: ignored a message on %s: not a device topic", _topic_for_log(topic)
                )
                continue
            if route.kind == MEASURE:
                item: Any = Measure(
                    route.apikey, route.device_id, payload, route.object_id, received_at, "mqtt"
                )
            else:
                item = CommandAnswer(route.apikey, route.device_id, payload, received_at)
            if runs and runs[-1][0] == route.kind:
                runs[-1][1].append(item)
                runs[-1] = (route.kind, runs[-1][1], index)
            else:
                runs.append((route.kind, [item], index))
        steps: list[_Step] = []
        for kind, items, last in runs:
            if kind == MEASURE:
                prepared = await self._retrying(lambda items=items: self.ingest.prepare(items))
                if prepared is _STOPPED:
                    return None
                steps.append((kind, prepared, len(items), last))
            else:
                steps.append((kind, items, len(items), last))
        return steps

    async def _commit(
        self,
        client: _Client,
        batch: list[_Inboxed],
        steps: list[_Step],
        previous: asyncio.Task[bool] | None,
        me: _Commit,
    ) -> bool:
        """Hand the steps to the agent in order, acknowledging each once the agent returned
        and the batch before this one is acknowledged (PUBACKs leave in arrival order); False
        when the bridge stops first."""
        acked = 0
        for kind, work, count, last in steps:
            if kind == MEASURE:
                outcome = await self._write_in_order(work, previous, me)
                if outcome is _STOPPED:
                    return False
                if previous is not None and not await previous:
                    return False  # its messages come again: so do these, in the same order
                self.counters.measures += count
                self.counters.refused += sum(1 for reason in outcome if reason is not None)
            else:
                if previous is not None and not await previous:
                    return False
                if await self._retrying(lambda work=work: self.ingest.command_answers(work)) is (
                    _STOPPED
                ):
                    return False
                self.counters.command_answers += count
            self._ack(client, batch[acked : last + 1])
            acked = last + 1
        if previous is not None and not await previous:
            return False
        self._ack(client, batch[acked:])
        self.counters.batches += 1
        return True

    async def _write_in_order(
        self, work: Any, previous: asyncio.Task[bool] | None, me: _Commit
    ) -> Any:
        """``ingest.commit(work)`` on the bridge's chain; when it fails, again once the batches
        before it are written, on a new chain each time, until it is written (``_STOPPED``
        when the bridge stops first)."""
        try:
            return await self.ingest.commit(work, chain=self._chain)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            me.failed = True
            self._failed(exc, RETRY_FIRST)
        if previous is not None and not await previous:
            return _STOPPED

        async def again() -> Any:
            # The oldest batch not written: a new chain cannot let any later one pass it.
            self._chain = WriteChain(next(self._chain_numbers))
            return await self.ingest.commit(work, chain=self._chain)

        return await self._retrying(again, failed_once=True)

    async def _retrying(self, work: Callable[[], Awaitable[Any]], failed_once: bool = False) -> Any:
        """``work()`` until it returns, after the first pause when it ``failed_once`` already;
        ``_STOPPED`` when the bridge stops first."""
        delay = RETRY_FIRST
        if failed_once:
            if await self._pause(delay):
                return _STOPPED
            delay *= 2
        while True:
            try:
                return await work()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc, delay)
                if await self._pause(delay):
                    return _STOPPED
                delay = min(delay * 2, RETRY_MAX)

    def _failed(self, exc: Exception, delay: float) -> None:
        self.counters.ingest_failures += 1
        log.warning(
            "MQTT: the agent could not take a batch (%s: %s); trying again in %.1f s",
            type(exc).__name__,
            exc,
            delay,
            exc_info=self.counters.ingest_failures == 1,
        )

    @staticmethod
    def _ack(client: _Client, messages: Sequence[_Inboxed]) -> None:
        client.puback([mid for _, _, _, mid in messages if mid is not None])


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
