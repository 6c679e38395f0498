"""The MQTT bridge against a real Mosquitto of the test's own (started on a free port, with
persistence in tmp_path, so that it can be stopped and started again); the agent is a recording
``Ingest``. Skipped, with the reason, when the mosquitto binary is not installed."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import aiomqtt
import pytest

from cidade.config import Settings
from cidade.devices.messages import CommandAnswer, Measure
from cidade.devices.mqtt import (
    TOPICS,
    MqttBridge,
    MqttUnavailable,
    Route,
    command_topic,
    parse_broker_url,
    parse_topic,
)
from cidade.store.base import WriteChain
from tests.conftest import service_missing

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None
)
SRC = str(Path(__file__).resolve().parents[2] / "src")


# -- a private broker ----------------------------------------------------------------------------


class Broker:
    """One mosquitto process on 127.0.0.1:<free port>, persistence in ``directory``."""

    def __init__(self, directory: Path, extra: str = "") -> None:
        self.directory = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            textwrap.dedent(
                f"""\
                listener {self.port} 127.0.0.1
                allow_anonymous true
                persistence true
                persistence_location {directory}/
                persistence_file mosquitto.db
                max_queued_messages 0
                log_dest file {directory}/mosquitto.log
                """
            )
            + ("user root\n" if os.geteuid() == 0 else "")
            + extra
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert MOSQUITTO is not None
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not listen in time")

    def stop(self) -> None:
        """SIGTERM: mosquitto writes its persistence file, then exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@pytest.fixture
def broker(tmp_path: Path):
    if MOSQUITTO is None:
        service_missing("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


# -- a recording agent ---------------------------------------------------------------------------


class Recorder:
    """The agent as the bridge sees it: keeps what it is given, in order."""

    def __init__(
        self,
        refuse: Callable[[Measure], str | None] = lambda m: None,
        failures: int = 0,
    ) -> None:
        self.measures: list[Measure] = []
        self.answers: list[CommandAnswer] = []
        self.batches: list[int] = []
        self.refuse = refuse
        self.failures = failures

    async def prepare(self, measures: Sequence[Measure]) -> Sequence[Measure]:
        return measures

    async def commit(self, measures: Sequence[Measure], *, chain=None) -> list[str | None]:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("store unavailable")
        self.batches.append(len(measures))
        self.measures.extend(measures)
        return [self.refuse(m) for m in measures]

    async def command_answers(self, answers: Sequence[CommandAnswer]) -> None:
        self.answers.extend(answers)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def bridge_for(broker: Broker, agent: Recorder, client_id: str = "cidade-test", **kw) -> MqttBridge:
    settings = Settings(mqtt=broker.url, mqtt_client_id=client_id)
    kw.setdefault("backoff_initial", 0.05)
    kw.setdefault("backoff_max", 0.5)
    return MqttBridge(settings, agent, **kw)


async def publish(broker: Broker, messages: Sequence[tuple[str, bytes]], qos: int = 1) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier=f"dev-{uuid.uuid4().hex}") as c:
        for topic, payload in messages:
            await c.publish(topic, payload, qos=qos)


# -- topics and addresses (no broker) ------------------------------------------------------------


def test_topics_match_the_iot_agent():
    for prefix in ("/json/", "/", "json/"):
        for suffix in ("attrs", "attrs/+", "cmdexe"):
            assert f"{prefix}+/+/{suffix}" in TOPICS
    assert len(TOPICS) == 9


@pytest.mark.parametrize(
    ("topic", "route"),
    [
        ("/json/k1/dev1/attrs", Route("measure", "k1", "dev1")),
        ("/json/k1/dev1/attrs/t", Route("measure", "k1", "dev1", "t")),
        ("/json/k1/dev1/cmdexe", Route("answer", "k1", "dev1")),
        ("/k1/dev1/attrs", Route("measure", "k1", "dev1")),
        ("/k1/dev1/attrs/h", Route("measure", "k1", "dev1", "h")),
        ("/k1/dev1/cmdexe", Route("answer", "k1", "dev1")),
        ("json/k1/dev1/attrs", Route("measure", "k1", "dev1")),
        ("json/k1/dev1/attrs/t", Route("measure", "k1", "dev1", "t")),
        ("json/k1/dev1/cmdexe", Route("answer", "k1", "dev1")),
        # an API key that is "json", in the legacy form
        ("/json/dev1/attrs", Route("measure", "json", "dev1")),
        ("/json/dev1/attrs/t", Route("measure", "json", "dev1", "t")),
        # malformed
        ("/k1//attrs", None),
        ("//dev1/attrs", None),
        ("/json/k1/dev1/attrs/", None),
        ("/json//dev1/cmdexe", None),
        ("/k1/dev1/cmd", None),
        ("/k1/dev1/attrs/a/b", None),
        ("k1/dev1/attrs", None),
        ("json/k1/attrs", None),
        ("/json/k1/dev1/configuration/commands", None),
    ],
)
def test_parse_topic(topic, route):
    assert parse_topic(topic) == route


def test_command_topic():
    assert command_topic("k1", "dev1") == "/k1/dev1/cmd"
    for bad in ("a/b", "+", "#", ""):
        with pytest.raises(ValueError):
            command_topic(bad, "dev1")
        with pytest.raises(ValueError):
            command_topic("k1", bad)


def test_broker_url_with_credentials_never_shows_the_password():
    a = parse_broker_url("mqtt://iot%40city:s3cr%3At@broker.example:1884")
    assert (a.host, a.port, a.tls) == ("broker.example", 1884, False)
    assert (a.username, a.password) == ("iot@city", "s3cr:t")
    assert a.ssl_context() is None
    assert "s3cr" not in repr(a) and "s3cr" not in a.safe()
    assert a.safe() == "mqtt://iot@city@broker.example:1884"
    assert parse_broker_url("mqtt://broker").port == 1883
    with pytest.raises(ValueError) as info:
        parse_broker_url("http://user:hunter2@broker")
    assert "hunter2" not in str(info.value)
    for bad in ("mqtt://", "mqtt://broker/topic", "mqtt://broker:99999", "broker:1883"):
        with pytest.raises(ValueError):
            parse_broker_url(bad)


def test_broker_url_tls(tmp_path):
    a = parse_broker_url("mqtts://broker.example")
    assert (a.port, a.tls) == (8883, True)
    context = a.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    ca = tmp_path / "ca.pem"
    ca.write_text(_self_signed()[0])
    b = parse_broker_url("mqtts://u:p@broker.example:8884", str(ca))
    context = b.ssl_context()
    assert b.port == 8884 and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1


def test_gmqtt_log_lines_are_demoted_to_debug(caplog):
    """gmqtt's own lines (warnings included) leave at DEBUG, and only when DEBUG is on: the
    bridge reports connections, losses and refusals itself."""
    from cidade.devices.mqtt import _Quiet

    logger = logging.getLogger("cidade.devices.mqtt.gmqtt")
    quiet = _Quiet(logger, {})
    with caplog.at_level(logging.INFO, logger="cidade.devices.mqtt"):
        quiet.warning("[CONNECTION LOST] not reconnecting")
        quiet.debug("[MqttPackageHandler] RECV %s", "/json/k/d/attrs")
    assert caplog.records == []
    with caplog.at_level(logging.DEBUG, logger="cidade.devices.mqtt"):
        quiet.warning("[CONNECTION LOST] not reconnecting")
        quiet.debug("[MqttPackageHandler] RECV %s", "/json/k/d/attrs")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "[CONNECTION LOST] not reconnecting"),
        (logging.DEBUG, "[MqttPackageHandler] RECV /json/k/d/attrs"),
    ]


def test_bridge_refuses_an_empty_or_invalid_url():
    with pytest.raises(ValueError):
        MqttBridge(Settings(mqtt=""), Recorder())
    with pytest.raises(ValueError):
        MqttBridge(Settings(mqtt="tcp://broker"), Recorder())


# -- against the broker --------------------------------------------------------------------------


def test_measures_on_every_topic_form(broker):
    agent = Recorder()

    async def main():
        bridge = bridge_for(broker, agent)
        await bridge.start()
        await bridge.wait_connected(10)
        await publish(
            broker,
            [
                ("/json/k1/dev1/attrs", b'{"t": 21.5}'),
                ("/json/k1/dev1/attrs/h", b"70"),
                ("/k1/dev2/attrs", b'{"t": 1}'),
                ("/k1/dev2/attrs/h", b"hello"),
                ("json/k1/dev3/attrs", b'{"t": 2}'),
                ("json/k1/dev3/attrs/h", b"3"),
                ("/json/k1/dev1/cmdexe", b'{"ping": "pong"}'),
                ("/k1/dev2/cmdexe", b'{"ping": "ok"}'),
                ("json/k1/dev3/cmdexe", b'{"ping": "done"}'),
                ("/k1//attrs", b"{}"),  # no device id
                ("/json/k1/dev1/attrs/", b"1"),  # no object id
            ],
        )
        await until(lambda: bridge.counters.received == 11)
        await bridge.stop()
        return bridge

    bridge = asyncio.run(main())
    got = [(m.apikey, m.device_id, m.payload, m.object_id, m.transport) for m in agent.measures]
    assert got == [
        ("k1", "dev1", b'{"t": 21.5}', None, "mqtt"),
        ("k1", "dev1", b"70", "h", "mqtt"),
        ("k1", "dev2", b'{"t": 1}', None, "mqtt"),
        ("k1", "dev2", b"hello", "h", "mqtt"),
        ("k1", "dev3", b'{"t": 2}', None, "mqtt"),
        ("k1", "dev3", b"3", "h", "mqtt"),
    ]
    assert all(m.received_at.endswith("Z") for m in agent.measures)
    assert [(a.apikey, a.device_id, a.payload) for a in agent.answers] == [
        ("k1", "dev1", b'{"ping": "pong"}'),
        ("k1", "dev2", b'{"ping": "ok"}'),
        ("k1", "dev3", b'{"ping": "done"}'),
    ]
    c = bridge.counters
    assert (c.received, c.measures, c.command_answers, c.malformed_topics) == (11, 6, 3, 2)
    assert c.connections == 1 and c.refused == 0


def test_messages_with_mqtt5_properties_qos_0_and_long_topics_arrive_whole(broker):
    """Devices' usual messages (QoS 1, no MQTT 5 properties) are read by the bridge's own
    parser, any other by gmqtt's: all of them arrive whole, on the right topic."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    agent = Recorder()
    long_id = "d" * 300  # a topic longer than 255 bytes: both bytes of its length count
    properties = Properties(PacketTypes.PUBLISH)
    properties.ContentType = "application/json"
    properties.UserProperty = [("site", "porto")]

    async def main():
        bridge = bridge_for(broker, agent)
        await bridge.start()
        await bridge.wait_connected(10)
        async with aiomqtt.Client(
            "127.0.0.1",
            broker.port,
            identifier=f"dev-{uuid.uuid4().hex}",
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as c:
            await c.publish("/json/k1/dev1/attrs", b'{"t": 1}', qos=1, properties=properties)
            await c.publish("/json/k1/dev1/attrs", b'{"t": 2}', qos=0)
            await c.publish(f"/json/k1/{long_id}/attrs", b'{"t": 3}', qos=1)
            await c.publish("/json/k1/sensor-\u00e7/attrs/h", "\u00e9".encode(), qos=1)
            await c.publish("/json/k1/dev1/attrs/e", b"", qos=1)
        await until(lambda: bridge.counters.received == 5)
        await bridge.stop()
        return bridge

    bridge = asyncio.run(main())
    got = sorted((m.device_id, m.payload, m.object_id) for m in agent.measures)
    assert got == sorted(
        [
            ("dev1", b'{"t": 1}', None),
            ("dev1", b'{"t": 2}', None),
            (long_id, b'{"t": 3}', None),
            ("sensor-\u00e7", "\u00e9".encode(), "h"),
            ("dev1", b"", "e"),
        ]
    )
    assert bridge.counters.measures == 5 and bridge.counters.malformed_topics == 0


def test_batches_preserve_order_and_stopped_bridge_misses_nothing(broker):
    """Published while the bridge was stopped (its session kept by the broker): all arrive
    after it starts again, in batches, in each device's order."""
    agent = Recorder(refuse=lambda m: "unknown device" if m.device_id == "dev2" else None)
    n = 300

    async def main():
        bridge = bridge_for(broker, agent)
        await bridge.start()
        await bridge.wait_connected(10)
        await bridge.stop()  # the session (subscriptions, queue) stays with the broker
        assert not bridge.connected
        await publish(broker, [(f"/json/k1/dev{i % 3}/attrs", b'{"n": %d}' % i) for i in range(n)])
        await bridge.start()
        await until(lambda: len(agent.measures) == n)
        await bridge.stop()
        return bridge

    bridge = asyncio.run(main())
    for device in range(3):
        numbers = [m.payload for m in agent.measures if m.device_id == f"dev{device}"]
        assert numbers == [b'{"n": %d}' % i for i in range(device, n, 3)]
    assert sum(agent.batches) == n and max(agent.batches) > 1
    assert bridge.counters.batches == len(agent.batches)
    assert bridge.counters.refused == n // 3


def test_committed_messages_are_acknowledged_and_not_delivered_again(broker):
    """Every committed QoS 1 message was acknowledged (the bridge writes the PUBACKs of a
    batch itself): a bridge that comes back on the same session is handed only what is new."""
    first, second = Recorder(), Recorder()
    n = 500

    async def main():
        bridge = bridge_for(broker, first)
        await bridge.start()
        await bridge.wait_connected(10)
        await publish(broker, [(f"/json/k1/dev{i % 7}/attrs", b'{"n": %d}' % i) for i in range(n)])
        await until(lambda: len(first.measures) == n)
        await bridge.stop()
        again = bridge_for(broker, second)
        await again.start()
        await again.wait_connected(10)
        await publish(broker, [("/json/k1/dev0/attrs", b'{"n": -1}')])
        await until(lambda: len(second.measures) >= 1)
        await asyncio.sleep(0.5)
        await again.stop()

    asyncio.run(main())
    assert [m.payload for m in second.measures] == [b'{"n": -1}']


def test_ingest_failure_is_retried_and_nothing_lost(broker):
    agent = Recorder(failures=2)

    async def main():
        bridge = bridge_for(broker, agent)
        await bridge.start()
        await bridge.wait_connected(10)
        await publish(broker, [("/json/k1/dev1/attrs/n", b"%d" % i) for i in range(20)])
        await until(lambda: len(agent.measures) == 20)
        await bridge.stop()
        return bridge

    bridge = asyncio.run(main())
    assert [m.payload for m in agent.measures] == [b"%d" % i for i in range(20)]
    assert bridge.counters.ingest_failures == 2


class ChainedStore:
    """The agent as a store with WriteChains makes it: commits taken one at a time in the order
    they came, each taking a while; once one fails, the later ones of its chain are refused
    without being written (store/base.py, WriteChain)."""

    def __init__(self, failing: set[int]) -> None:
        self.failing = failing  # the commit calls that fail
        self.calls = 0
        self.written: list[bytes] = []
        self.overlapped = 0  # commits handed over while another one was being written
        self.chains: list[int] = []
        self._turn = asyncio.Lock()
        self._busy = False

    async def prepare(self, measures: Sequence[Measure]) -> Sequence[Measure]:
        return measures

    async def commit(self, measures: Sequence[Measure], *, chain: WriteChain | None = None):
        assert chain is not None  # the bridge always chains its commits
        self.chains.append(chain.number)
        if self._busy:
            self.overlapped += 1
        async with self._turn:
            self._busy = True
            try:
                chain.check()
                self.calls += 1
                await asyncio.sleep(0.02)
                if self.calls in self.failing:
                    chain.broken = RuntimeError("disk full")
                    raise chain.broken
                self.written.extend(m.payload for m in measures)
                return [None] * len(measures)
            finally:
                self._busy = False

    async def command_answers(self, answers: Sequence[CommandAnswer]) -> None:
        pass


def test_batches_committed_two_at_a_time_stay_in_order_through_a_failure(broker):
    """The bridge hands a batch over while the one before it is being written; when that one
    fails (twice: its first retry too), the one behind it is refused by the chain, and both are
    written again in order."""
    agent = ChainedStore(failing={3, 4})
    payloads = [b"%d" % i for i in range(400)]

    async def main():
        bridge = bridge_for(broker, agent, batch_max=20, batch_wait=0.0)
        await bridge.start()
        await bridge.wait_connected(10)
        await publish(broker, [("/json/k1/dev1/attrs/n", p) for p in payloads])
        await until(lambda: len(agent.written) >= 400)
        await asyncio.sleep(0.2)
        await bridge.stop()
        return bridge

    bridge = asyncio.run(main())
    assert agent.written == payloads  # each once, in the order published
    assert agent.overlapped > 0  # batches were handed over before the one before was written
    assert bridge.counters.ingest_failures >= 3  # the failed batch (twice), the one behind it
    assert len(set(agent.chains)) >= 2  # written again on a new chain


def test_send_command_publishes_qos1_on_the_cmd_topic(broker):
    async def main():
        bridge = bridge_for(broker, Recorder())
        with pytest.raises(MqttUnavailable):
            await bridge.send_command("k1", "dev1", b'{"ping": {}}')
        await bridge.start()
        await bridge.wait_connected(10)
        async with aiomqtt.Client("127.0.0.1", broker.port) as device:
            await device.subscribe("/k1/dev1/cmd", qos=1)
            await bridge.send_command("k1", "dev1", b'{"ping": {"data": "22"}}')
            async with asyncio.timeout(10):
                message = await anext(device.messages)
        await bridge.stop()
        assert bridge.counters.commands_sent == 1
        return message

    message = asyncio.run(main())
    assert message.topic.value == "/k1/dev1/cmd"
    assert message.qos == 1
    assert message.payload == b'{"ping": {"data": "22"}}'


def test_broker_restart_loses_no_qos1_message(broker):
    """N messages with QoS 1 across a restart of the broker: every one arrives at least once.
    The device republishes what the broker did not acknowledge (at least once on its side too);
    duplicates are counted, never missing ones."""
    agent = Recorder()
    n = 400

    async def device(acked: list[int]) -> None:
        i = 0
        while i < n:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", broker.port, identifier="device-1", timeout=2
                ) as c:
                    while i < n:
                        await c.publish("/json/k1/dev1/attrs/n", b"%d" % i, qos=1, timeout=2)
                        acked.append(i)
                        i += 1
                        if i % 20 == 0:
                            await asyncio.sleep(0.01)
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    async def main():
        bridge = bridge_for(broker, agent)
        await bridge.start()
        await bridge.wait_connected(10)
        acked: list[int] = []
        sender = asyncio.create_task(device(acked))
        await until(lambda: len(acked) >= n // 3)
        await asyncio.to_thread(broker.stop)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(broker.start)
        await sender
        await until(lambda: {int(m.payload) for m in agent.measures} >= set(range(n)), 30)
        await bridge.stop()
        return bridge

    bridge = asyncio.run(main())
    seen = Counter(int(m.payload) for m in agent.measures)
    assert set(seen) == set(range(n))
    duplicates = sum(count - 1 for count in seen.values())
    print(f"\n{n} messages across a broker restart: all received, {duplicates} duplicates")
    assert bridge.counters.connections >= 2


CRASHING_BRIDGE = """
import asyncio, os, sys
from cidade.config import Settings
from cidade.devices.mqtt import MqttBridge

class Crash:
    async def prepare(self, measures):
        return measures

    async def commit(self, measures, chain=None):
        print("received", len(measures), flush=True)
        os._exit(3)  # dies before the store would have committed

    async def command_answers(self, answers):
        os._exit(3)

async def main():
    bridge = MqttBridge(Settings(mqtt=sys.argv[1], mqtt_client_id="cidade-crash"), Crash())
    await bridge.start()
    await bridge.wait_connected(10)
    print("connected", flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


def test_crash_before_commit_gets_the_messages_again(broker):
    """A Cidade that dies between receiving messages and committing them has not acknowledged
    them: the broker delivers them again to the next Cidade with the same client id."""
    process = subprocess.Popen(
        [sys.executable, "-c", CRASHING_BRIDGE, broker.url],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": SRC},
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "connected"
        asyncio.run(publish(broker, [("/json/k1/dev1/attrs/n", b"%d" % i) for i in range(50)]))
        received = process.stdout.readline().split()
        assert process.wait(20) == 3
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert received[0] == "received" and int(received[1]) >= 1
    agent = Recorder()

    async def main():
        bridge = bridge_for(broker, agent, client_id="cidade-crash")
        await bridge.start()
        await until(lambda: len(agent.measures) >= 50)
        await asyncio.sleep(0.2)
        await bridge.stop()

    asyncio.run(main())
    assert [m.payload for m in agent.measures] == [b"%d" % i for i in range(50)]


# -- TLS -----------------------------------------------------------------------------------------


def _self_signed() -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM).decode(),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
    )


def test_tls_with_user_and_password(tmp_path):
    """mqtts:// with the CA of CIDADE_MQTT_CA_FILE, a user name and a password."""
    if MOSQUITTO is None:
        service_missing("mosquitto is not installed (apt-get install mosquitto)")
    cert, key = _self_signed()
    (tmp_path / "cert.pem").write_text(cert)
    (tmp_path / "key.pem").write_text(key)
    passwords = tmp_path / "passwords"
    passwords.write_text("")
    try:
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwords), "cidade", "s3cret"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        service_missing(f"mosquitto_passwd unavailable: {exc}")
    broker = Broker(tmp_path)
    broker.config.write_text(
        broker.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
        + f"password_file {passwords}\n"
        f"certfile {tmp_path / 'cert.pem'}\nkeyfile {tmp_path / 'key.pem'}\n"
    )
    broker.start()
    agent = Recorder()
    try:

        async def main():
            settings = Settings(
                mqtt=f"mqtts://cidade:s3cret@127.0.0.1:{broker.port}",
                mqtt_ca_file=str(tmp_path / "cert.pem"),
            )
            bridge = MqttBridge(settings, agent)
            await bridge.start()
            await bridge.wait_connected(10)
            context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
            async with aiomqtt.Client(
                "127.0.0.1",
                broker.port,
                username="cidade",
                password="s3cret",
                tls_context=context,
            ) as device:
                await device.publish("/json/k1/dev1/attrs", b'{"t": 1}', qos=1)
            await until(lambda: len(agent.measures) == 1)
            await bridge.stop()

        asyncio.run(main())
    finally:
        broker.stop()
    assert agent.measures[0].payload == b'{"t": 1}'


def test_wrong_password_is_retried_and_never_logged(broker, caplog, tmp_path):
    passwords = tmp_path / "passwords"
    passwords.write_text("")
    try:
        subprocess.run(
            ["mosquitto_passwd", "-b", str(passwords), "cidade", "right"],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        service_missing(f"mosquitto_passwd unavailable: {exc}")
    broker.stop()
    broker.config.write_text(
        broker.config.read_text().replace("allow_anonymous true", "allow_anonymous false")
        + f"password_file {passwords}\n"
    )
    broker.start()

    async def main():
        settings = Settings(mqtt=f"mqtt://cidade:wrong-hunter2@127.0.0.1:{broker.port}")
        bridge = MqttBridge(settings, Recorder(), backoff_initial=0.05, backoff_max=0.1)
        await bridge.start()
        await until(lambda: bridge.counters.connection_failures >= 2)
        assert not bridge.connected
        await bridge.stop()

    with caplog.at_level("INFO", logger="cidade.devices.mqtt"):
        asyncio.run(main())
    assert "cidade@127.0.0.1" in caplog.text
    assert "hunter2" not in caplog.text
